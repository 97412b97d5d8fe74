// One patient: alerts (active, with actions, and their history), trends
// (weight 30 days with the dry weight, blood pressure, heart rate, SpO2),
// the CTG viewer (live and past sessions), the monitoring plan with its
// thresholds and history, devices, and the call log. Every view of this
// page is audited by the hub.

import { h, mount } from "./dom.js";
import { get, put, observations, normalizeObs, ApiError } from "./api.js";
import { t, dateTime, ago, num, ruleName, label } from "./i18n.js";
import { severityBadge, stateBadge, actionButtons, callDialog, compareAlerts, isActive, errorText } from "./alerts.js";
import { trendChart, chartSummary } from "./charts.js";
import { ctgViewer } from "./ctg.js";
import { news2Detail } from "./news2.js";

const DAY = 86400000;
const enc = encodeURIComponent;

/** Parses a JSON text field (the store keeps some as text). */
function json(v) {
  if (typeof v !== "string") return v ?? null;
  try { return JSON.parse(v); } catch { return null; }
}

function section(id, title, ...body) {
  return h("section", { class: "card", id, "aria-labelledby": `${id}-h` }, h("h2", { id: `${id}-h` }, title), ...body);
}

export function render(container, { me, live, params }) {
  const id = params[0];
  const canEdit = me.role === "physician" || me.role === "admin";
  const trendCharts = []; // destroyers of the uPlot instances
  let patient = null;
  let alerts = [];
  let plan = null;

  const head = h("div", { class: "view-head" }, h("p", {}, t("loading")));
  const errorBox = h("p", { class: "form-error", role: "alert", hidden: true });
  const alertsBox = h("div");
  const trendsBox = h("div", { class: "trends" });
  const ctgBox = h("div");
  const planBox = h("div");
  const devicesBox = h("div");
  const callsBox = h("div");
  const ctgSection = section("ctg", t("patient.ctg"), ctgBox);
  ctgSection.hidden = true;
  mount(container,
    h("p", {}, h("a", { href: "#/board" }, "← ", t("patient.back"))),
    head, errorBox,
    section("alerts", t("patient.alerts"), alertsBox),
    ctgSection,
    section("trends", t("patient.trends"), trendsBox),
    h("div", { class: "two-col" },
      section("plan", t("patient.plan"), planBox),
      h("div", {},
        section("devices", t("patient.devices"), devicesBox),
        section("calls", t("patient.calls"), callsBox))));

  const fail = (e) => { errorBox.textContent = errorText(e); errorBox.hidden = false; };

  async function loadPatient() {
    patient = await get(`/patients/${enc(id)}`);
    mount(head,
      h("h1", {}, patient.name),
      h("p", { class: "muted" },
        `${t("patient.id")} ${patient.id} · ${t("patient.program")}: ${patient.program ? label("program.", patient.program) : t("program.none")}`),
      h("button", { type: "button", "data-action": "call", onclick: () => callDialog(id, patient.name, alerts.filter(isActive), loadCalls) }, t("act.call")),
      news2Detail(patient.news2));
  }

  // ------------------------------------------------------------ alerts
  async function loadAlerts() {
    alerts = await get("/alerts", { patient: id, state: "all", limit: 200 });
    drawAlerts();
  }

  function drawAlerts() {
    const active = alerts.filter(isActive).sort(compareAlerts);
    const past = alerts.filter((a) => !isActive(a))
      .sort((a, b) => Date.parse(b.resolved_at ?? b.updated_at) - Date.parse(a.resolved_at ?? a.updated_at));
    mount(alertsBox,
      h("h3", {}, t("patient.active_alerts")),
      active.length ? h("ul", { class: "alert-list" }, active.map((a) => alertItem(a, true)))
        : h("p", { class: "muted" }, t("patient.no_alerts")),
      h("h3", {}, t("patient.alert_history")),
      past.length ? h("ul", { class: "alert-list past" }, past.slice(0, 50).map((a) => alertItem(a, false)))
        : h("p", { class: "muted" }, t("patient.no_alerts")));
  }

  function alertItem(a, active) {
    const history = h("div", { class: "history" });
    const details = h("details", {}, h("summary", {}, t("patient.history_of")), history);
    details.addEventListener("toggle", async () => {
      if (!details.open || history.dataset.loaded) return;
      try {
        const r = await get(`/alerts/${a.alert_id}`);
        history.dataset.loaded = "1";
        mount(history, h("ol", {}, (r.history ?? []).map((e) => h("li", {},
          h("time", { datetime: e.at }, dateTime(e.at)), " · ", label("handover.action.", e.action), " · ", e.actor,
          e.to_state ? ` → ${t(`state.${e.to_state}`)}` : "", e.note ? ` — ${e.note}` : ""))));
      } catch (e) { mount(history, errorText(e)); }
    });
    return h("li", { class: `alert-item sev-border-${a.severity}`, dataset: { alertId: a.alert_id, state: a.state } },
      h("div", { class: "alert-line" }, severityBadge(a.severity), " ", h("strong", {}, ruleName(a.rule)), " ",
        stateBadge(a), " ", h("span", { class: "muted" }, `${t(`cat.${a.category}`)} · ${dateTime(a.opened_at)}`),
        a.count > 1 ? h("span", { class: "muted" }, ` · ×${a.count}`) : null),
      h("p", { class: "explanation" }, a.explanation),
      a.threshold ? h("p", { class: "muted small" }, a.threshold) : null,
      !active && a.outcome ? h("p", { class: "small" }, `${label("outcome.", a.outcome)}${a.note ? ` — ${a.note}` : ""} (${a.resolved_by ?? ""}, ${dateTime(a.resolved_at)})`) : null,
      active ? h("div", { class: "actions" }, actionButtons(a, patient?.name, { onChange: upsert, onError: fail })) : null,
      details);
  }

  function upsert(a) {
    if (!a || a.patient_id !== id) return;
    const old = alerts.find((x) => x.alert_id === a.alert_id);
    if (old && old.version > a.version) return;
    alerts = alerts.filter((x) => x.alert_id !== a.alert_id).concat([a]);
    drawAlerts();
  }

  // ------------------------------------------------------------ trends
  async function loadTrends() {
    const to = Date.now();
    const from = to - 30 * DAY;
    const [weight, sys, dia, hr, spo2] = await Promise.all(
      ["weight", "sys", "dia", "hr", "spo2"].map((m) => observations(id, m, from, to, 5000)));
    trendCharts.splice(0).forEach((f) => f());
    trendsBox.replaceChildren();
    const chart = (title, unit, lines, refs, yRange) => {
      const all = lines.flatMap((l) => l.points);
      const box = h("div", { class: "chart" });
      const fig = h("figure", { class: "trend" },
        h("figcaption", {}, h("strong", {}, title), " ", h("span", { class: "muted" }, lines.map((l) => chartSummary(l.points, unit)).join(" · "))),
        all.length ? box : h("p", { class: "muted" }, t("patient.no_data")));
      trendsBox.append(fig);
      if (all.length) trendCharts.push(destroyer(trendChart(box, { lines, refs, unit, fromMs: from, toMs: to, yRange })));
    };
    const dry = plan?.dry_weight_kg;
    chart(t("patient.weight30"), "kg", [{ label: t("metric.weight"), points: weight }],
      Number.isFinite(dry) ? [{ label: t("patient.dry_weight", { kg: num(dry) }), value: dry }] : []);
    if (!Number.isFinite(dry)) trendsBox.lastChild.append(h("p", { class: "muted small" }, t("patient.no_dry_weight")));
    chart(t("patient.bp"), "mmHg", [{ label: t("metric.bp_sys"), points: sys }, { label: t("metric.bp_dia"), points: dia }], []);
    chart(t("patient.hr"), "/min", [{ label: t("metric.hr"), points: hr }], []);
    chart(t("patient.spo2"), "%", [{ label: t("metric.spo2"), points: spo2 }], [], [80, 100]);
  }

  const destroyer = (u) => () => { u.__ro?.disconnect(); u.destroy(); };

  // --------------------------------------------------------------- CTG
  let viewer = null; // the live one
  const liveBox = h("div", { class: "ctg-live" });
  const pastBox = h("div", { class: "ctg-past" });
  const pastList = h("div");

  async function loadCtg() {
    let sessions = [];
    try { sessions = await get(`/patients/${enc(id)}/ctg-sessions`); } catch (e) { if (!(e instanceof ApiError) || e.status !== 404) throw e; }
    // A session in progress: fhr within the last two minutes. Its start is
    // where the samples before have a gap of five minutes or more.
    const to = Date.now();
    const [fhr, toco] = await Promise.all([
      observations(id, "fhr", to - 60 * 60000, to, 20000),
      observations(id, "toco", to - 60 * 60000, to, 20000)]);
    const recent = fhr.concat(toco);
    const pregnant = patient?.program === "pregnancy_diabetes";
    if (!pregnant && !sessions.length && !fhr.length) return;
    ctgSection.hidden = false;
    mount(ctgBox, liveBox, h("h3", {}, t("patient.ctg_sessions")), pastList, pastBox);
    if (fhr.length && to - fhr[fhr.length - 1].t < 2 * 60000) {
      let start = fhr[fhr.length - 1].t;
      for (let i = fhr.length - 1; i > 0; i--) {
        if (fhr[i].t - fhr[i - 1].t >= 5 * 60000) break;
        start = fhr[i - 1].t;
      }
      startLive(start, recent.filter((o) => o.t >= start));
    } else {
      mount(liveBox, h("p", { class: "muted ctg-none" }, t("ctg.no_live")));
    }
    drawSessions(sessions);
  }

  function startLive(startMs, samples) {
    viewer?.destroy();
    viewer = ctgViewer(liveBox, { startMs, samples, live: true });
  }

  function drawSessions(sessions) {
    if (!sessions.length) { mount(pastList, h("p", { class: "muted" }, t("patient.ctg_none"))); return; }
    mount(pastList, h("table", { class: "compact" },
      h("thead", {}, h("tr", {}, [t("ctg.past", { start: "" }), t("ctg.duration"), t("ctg.baseline"), t("ctg.stv"),
        t("ctg.accelerations"), t("ctg.decelerations"), t("ctg.signal_loss"), ""].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, sessions.map((s) => {
        const sum = json(s.summary) ?? {};
        const start = s.started_at ?? sum.start;
        const end = s.ended_at ?? sum.end;
        return h("tr", {},
          h("td", {}, dateTime(start)),
          h("td", {}, `${Math.round((sum.duration_ms ?? (Date.parse(end) - Date.parse(start))) / 60000)} min`),
          h("td", {}, sum.baseline_bpm != null ? `${num(sum.baseline_bpm, 0)} bpm` : "–"),
          h("td", {}, sum.stv_ms != null ? `${num(sum.stv_ms, 1)} ms` : "–"),
          h("td", {}, sum.accelerations ?? "–"),
          h("td", {}, sum.decelerations ?? "–"),
          h("td", {}, sum.signal_loss_pct != null ? `${num(sum.signal_loss_pct, 1)} %` : "–"),
          h("td", {}, h("button", { type: "button", onclick: () => showPast(start, end, sum) }, t("ctg.show"))));
      }))));
  }

  let pastViewer = null;
  async function showPast(start, end, summary) {
    const s = Date.parse(start), e = Date.parse(end) + 1000;
    mount(pastBox, h("p", {}, t("loading")));
    try {
      const [fhr, toco] = await Promise.all([observations(id, "fhr", s, e, 20000), observations(id, "toco", s, e, 20000)]);
      pastViewer?.destroy();
      pastViewer = ctgViewer(pastBox, { startMs: s, endMs: e, samples: fhr.concat(toco), summary });
      pastBox.scrollIntoView({ block: "nearest" });
    } catch (err) { mount(pastBox, errorText(err)); }
  }

  // -------------------------------------------------------------- plan
  async function loadPlan() {
    plan = await get(`/patients/${enc(id)}/plan`);
    let history = [];
    try { history = await get(`/patients/${enc(id)}/plan/history`); } catch { history = []; }
    const th = plan.thresholds ?? {};
    mount(planBox,
      h("p", {}, t("patient.plan_version", { v: plan.version }), " · ", plan.program ? label("program.", plan.program) : t("program.none")),
      h("dl", { class: "kv" },
        h("dt", {}, t("patient.plan_virtual_ward")), h("dd", {}, plan.virtual_ward ? t("yes") : t("no")),
        h("dt", {}, t("metric.weight")), h("dd", {}, Number.isFinite(plan.dry_weight_kg) ? t("patient.dry_weight", { kg: num(plan.dry_weight_kg) }) : t("patient.no_dry_weight")),
        h("dt", {}, t("patient.plan_schedule")), h("dd", {}, (plan.schedule ?? []).map((s) => `${label("metric.", s.metric)} ${s.by}`).join(", ") || "–"),
        h("dt", {}, t("patient.plan_doses")), h("dd", {}, (plan.doses ?? []).map((d) => `${d.name} ${d.at}`).join(", ") || "–")),
      h("h3", {}, t("patient.plan_rules")),
      h("ul", { class: "tags" }, [...(plan.rules ?? [])].map((r) => h("li", {}, ruleName(r)))),
      h("details", {}, h("summary", {}, t("patient.plan_thresholds")),
        h("table", { class: "compact" }, h("tbody", {}, Object.entries(th).map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, num(v, 2))))))),
      canEdit ? planEditor(th) : null,
      h("h3", {}, t("patient.plan_history")),
      history.length ? h("ol", { class: "plan-history" }, history.slice().reverse().map((v) => h("li", {},
        h("strong", {}, t("patient.plan_version", { v: v.version })), " · ", dateTime(v.changed_at), " · ", v.changed_by,
        h("div", {}, v.reason), planDiff(json(v.previous), json(v.plan)))))
        : h("p", { class: "muted" }, t("patient.plan_no_history")));
  }

  /**
   * Physicians and admins change the plan: dry weight, virtual ward, one
   * threshold at a time; always with a reason, kept in the plan history.
   */
  function planEditor(th) {
    const keys = Object.keys(th);
    const thKey = h("select", { name: "key" }, h("option", { value: "" }, "–"), keys.map((k) => h("option", { value: k }, k)));
    const thValue = h("input", { name: "value", type: "number", step: "any", inputmode: "decimal" });
    thKey.addEventListener("change", () => { thValue.value = th[thKey.value] ?? ""; });
    const error = h("p", { class: "form-error", role: "alert", hidden: true });
    const form = h("form", { class: "plan-edit" },
      h("label", { class: "field" }, h("span", {}, t("plan.dry_weight")),
        h("input", { name: "dry", type: "number", step: "0.1", min: "20", max: "350", value: plan.dry_weight_kg ?? "" })),
      h("label", {}, h("input", { type: "checkbox", name: "vw", checked: !!plan.virtual_ward }), " ", t("patient.plan_virtual_ward")),
      h("div", { class: "inline-form" },
        h("label", { class: "field" }, h("span", {}, t("plan.threshold")), thKey),
        h("label", { class: "field" }, h("span", {}, t("plan.value")), thValue)),
      h("label", { class: "field" }, h("span", {}, t("plan.reason")), h("input", { name: "reason", required: true, maxlength: 500 })),
      error,
      h("button", { type: "submit", class: "primary" }, t("plan.save")));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const v = Object.fromEntries(new FormData(form).entries());
      const changes = {};
      const dry = v.dry === "" ? null : Number(v.dry);
      if (dry !== (plan.dry_weight_kg ?? null)) changes.dry_weight_kg = dry;
      if (!!v.vw !== !!plan.virtual_ward) changes.virtual_ward = !!v.vw;
      if (v.key && v.value !== "" && Number(v.value) !== th[v.key]) changes.thresholds = { [v.key]: Number(v.value) };
      try {
        await put(`/patients/${enc(id)}/plan`, { changes, reason: v.reason.trim() });
        await loadPlan();
        await loadTrends();
      } catch (e) { error.textContent = errorText(e); error.hidden = false; }
    });
    return h("details", {}, h("summary", {}, t("plan.edit")), form);
  }

  /** What changed between two plan versions, as "key: old → new". */
  function planDiff(prev, next) {
    if (!prev || !next) return null;
    const flat = (o, p = "") => Object.entries(o ?? {}).flatMap(([k, v]) =>
      v && typeof v === "object" && !Array.isArray(v) ? flat(v, `${p}${k}.`) : [[`${p}${k}`, JSON.stringify(v)]]);
    const a = new Map(flat(prev)), b = new Map(flat(next));
    const changes = [...b].filter(([k, v]) => k !== "version" && a.get(k) !== v).map(([k, v]) => `${k}: ${a.get(k) ?? "–"} → ${v}`);
    return changes.length ? h("ul", { class: "small" }, changes.map((c) => h("li", {}, c))) : null;
  }

  // ----------------------------------------------------------- devices
  async function loadDevices() {
    let devices;
    try {
      devices = await get(`/patients/${enc(id)}/devices`);
    } catch (e) {
      if (!(e instanceof ApiError) || (e.status !== 404 && e.status !== 405)) throw e;
      devices = (await get("/devices")).filter((d) => d.patient_id === id);
    }
    if (!devices.length) { mount(devicesBox, h("p", { class: "muted" }, t("patient.no_devices"))); return; }
    mount(devicesBox, h("table", { class: "compact" },
      h("thead", {}, h("tr", {}, [t("dev.id"), t("dev.kind"), t("dev.battery"), t("dev.last_contact")].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, devices.map((d) => {
        const online = d.online ?? (d.connection ? d.connection === "online" : null);
        const battery = d.battery ?? d.battery_pct;
        const last = d.last_contact_at ?? d.last_seen_at;
        return h("tr", {},
          h("td", {}, d.id ?? d.device_id),
          h("td", {}, label("kind.", d.kind)),
          h("td", {}, battery != null ? h("span", { class: battery <= 20 ? "warn" : "" }, battery <= 20 ? "⚠ " : "", `${num(battery, 0)} %`) : t("dev.unknown")),
          h("td", {}, last ? h("time", { datetime: last, title: dateTime(last) }, ago(last)) : t("dev.unknown"),
            online === null ? "" : h("span", { class: online ? "ok" : "warn" }, " · ", online ? `✓ ${t("dev.online")}` : `✗ ${t("dev.offline")}`)));
      }))));
  }

  // ------------------------------------------------------------- calls
  async function loadCalls() {
    let calls;
    try { calls = await get(`/patients/${enc(id)}/calls`); } catch (e) { mount(callsBox, h("p", { class: "muted" }, errorText(e))); return; }
    mount(callsBox,
      calls.length ? h("ul", { class: "calls" }, calls.map((c) => h("li", {},
        h("time", { datetime: c.at }, dateTime(c.at)), " · ", c.staff?.name ?? c.staff ?? "", " · ", t(`call.${c.outcome}`),
        c.note ? h("div", {}, c.note) : null))) : h("p", { class: "muted" }, t("call.empty")));
  }

  // -------------------------------------------------------------- live
  live.subscribe(id);
  const off = live.on((msg) => {
    if (msg.type === "alert") upsert(msg.alert);
    else if (msg.type === "snapshot") loadAlerts().catch(fail);
    else if (msg.type === "obs" && msg.patient_id === id) {
      const recs = (msg.records ?? []).map(normalizeObs).filter((o) => o.n === "fhr" || o.n === "toco");
      if (!recs.length) return;
      ctgSection.hidden = false;
      if (!viewer) {
        if (!ctgBox.contains(liveBox)) mount(ctgBox, liveBox, h("h3", {}, t("patient.ctg_sessions")), pastList, pastBox);
        startLive(Math.min(...recs.map((r) => r.t)), []);
      }
      viewer.append(recs);
    } else if (msg.type === "ctg_status" && msg.patient_id === id) {
      if (viewer && msg.status) viewer.setRunning(msg.status);
    } else if (msg.type === "ctg_session" && msg.patient_id === id) {
      const summary = json(msg.summary);
      if (summary && viewer && summary.end) viewer.setSummary(summary);
      get(`/patients/${enc(id)}/ctg-sessions`).then(drawSessions).catch(() => {});
    }
  });

  (async () => {
    try {
      await loadPatient();
    } catch (e) { fail(e); mount(head, h("h1", {}, id)); return; }
    const jobs = [loadAlerts(), loadPlan().then(loadTrends), loadDevices(), loadCalls(), loadCtg()];
    for (const r of await Promise.allSettled(jobs)) if (r.status === "rejected") fail(r.reason);
  })();

  return () => {
    off();
    live.unsubscribe(id);
    viewer?.destroy();
    pastViewer?.destroy();
    trendCharts.forEach((f) => f());
  };
}
