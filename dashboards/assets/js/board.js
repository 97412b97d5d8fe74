// The triage board: the nurse's patients, worst first (the hub sorts:
// open high alerts, then medium, then missing data, then stable; the
// oldest unacknowledged first within a level). Alert changes from the
// websocket update a row at once; the board is then refetched (debounced)
// to re-sort and refresh the aggregates. "Open for" ticks every 30 s.

import { h, mount, announce } from "./dom.js";
import { get } from "./api.js";
import { t, time, since, ago, num, ruleName, label } from "./i18n.js";
import { severityBadge, levelBadge, stateBadge, actionButtons, callDialog, compareAlerts, isActive, errorText } from "./alerts.js";
import { sparkline } from "./charts.js";
import { news2Badge } from "./news2.js";

const METRICS = [
  { key: "weight", label: "metric.weight", unit: "kg", digits: 1 },
  { key: "bp", label: "metric.bp", unit: "mmHg" },
  { key: "hr", label: "metric.hr", unit: "/min", digits: 0 },
  { key: "spo2", label: "metric.spo2", unit: "%", digits: 0 },
];

export function render(container, { live }) {
  let rows = [];
  let generatedAt = null;
  let loaded = false;
  let error = null;
  const known = new Set(); // alert ids seen, to tell new alerts apart
  const sparkCache = new Map(); // patient id + metric → {sig, el}
  const flash = new Map(); // patient id → highlight until (ms)
  let refetchTimer = null;
  let fetching = null;

  const status = h("p", { class: "muted board-status", "aria-live": "off" });
  const tbody = h("tbody");
  const table = h("table", { class: "board", id: "board" },
    h("caption", { class: "visually-hidden" }, t("board.title")),
    h("thead", {}, h("tr", {},
      ["level", "patient", "alert", "since", "latest", "adherence", "last", "actions"]
        .map((c) => h("th", { scope: "col", class: `col-${c}` }, t(`board.col.${c}`))))),
    tbody);
  const empty = h("p", { class: "empty", hidden: true }, t("board.empty"));
  const errorBox = h("p", { class: "form-error", role: "alert", hidden: true });
  mount(container,
    h("div", { class: "view-head" }, h("h1", {}, t("board.title")), status),
    errorBox, empty, h("div", { class: "table-wrap" }, table));

  let again = false;
  async function fetchBoard() {
    // A change during a fetch may not be in its answer: fetch once more.
    if (fetching) { again = true; return fetching; }
    fetching = (async () => {
      const startedAt = Date.now();
      try {
        const b = await get("/board");
        rows = b.rows ?? [];
        mergeRecent(startedAt);
        generatedAt = b.generated_at;
        error = null;
        for (const r of rows) for (const a of r.alerts ?? []) known.add(a.alert_id);
        loaded = true;
      } catch (e) {
        error = e;
      } finally {
        fetching = null;
      }
      draw();
      if (again) { again = false; scheduleRefetch(0); }
    })();
    return fetching;
  }

  // Alert deltas received while a fetch was under way may be newer than
  // its answer: apply them again on top, so the board never steps back.
  const recent = new Map(); // alert id → {alert, at}
  function mergeRecent(startedAt) {
    for (const [id, { alert, at }] of recent) {
      if (at < startedAt - 5000) { recent.delete(id); continue; }
      const row = rows.find((r) => r.patient.id === alert.patient_id);
      if (!row) continue;
      const list = row.alerts ?? [];
      const old = list.find((x) => x.alert_id === id);
      if (old && old.version >= alert.version) continue;
      row.alerts = list.filter((x) => x.alert_id !== id).concat(isActive(alert) ? [alert] : []).sort(compareAlerts);
    }
  }

  // Coalesces bursts of deltas into one refetch. A pending refetch is kept
  // (not pushed back) so that a steady stream of readings cannot starve it.
  let refetchDue = Infinity;
  function scheduleRefetch(ms = 300) {
    const due = Date.now() + ms;
    if (due >= refetchDue) return;
    clearTimeout(refetchTimer);
    refetchDue = due;
    refetchTimer = setTimeout(() => { refetchDue = Infinity; fetchBoard(); }, ms);
  }

  function draw() {
    errorBox.hidden = !error;
    if (error) errorBox.textContent = errorText(error);
    if (!loaded) { status.textContent = t("loading"); return; }
    status.textContent = `${t("board.count", { n: rows.length })} · ${t("board.updated", { time: time(generatedAt) })}`;
    empty.hidden = rows.length > 0;
    // Redrawing must not pull the keyboard focus out from under the nurse:
    // put it back on the same control of the same patient's row.
    const active = document.activeElement;
    let focus = null;
    if (active && tbody.contains(active)) {
      const tr = active.closest("tr");
      focus = { patient: tr?.dataset.patient, action: active.dataset.action ?? (active.matches(".patient-link") ? "link" : null) };
    }
    tbody.replaceChildren(...rows.map(rowEl));
    if (focus?.patient) {
      const tr = tbody.querySelector(`tr[data-patient="${CSS.escape(focus.patient)}"]`);
      const el = focus.action === "link" ? tr?.querySelector(".patient-link")
        : focus.action ? tr?.querySelector(`[data-action="${focus.action}"]`) : null;
      (el ?? tr?.querySelector("a, button"))?.focus({ preventScroll: true });
    }
  }

  function rowEl(r) {
    const p = r.patient;
    const alerts = (r.alerts ?? []).filter(isActive).sort(compareAlerts);
    const top = alerts[0];
    const tr = h("tr", {
      class: `row level-${r.level}${(flash.get(p.id) ?? 0) > Date.now() ? " flash" : ""}`,
      dataset: { patient: p.id, level: r.level },
    });
    const link = h("a", { href: `#/patient/${encodeURIComponent(p.id)}`, class: "patient-link" }, p.name);
    tr.append(
      h("td", { class: "col-level" }, levelBadge(r.level)),
      h("th", { scope: "row", class: "col-patient" }, link,
        h("div", { class: "muted small" }, p.program ? label("program.", p.program) : "")),
      h("td", { class: "col-alert" }, top ? alertSummary(top, alerts.length - 1, alerts.slice(1)) : h("span", { class: "muted" }, t("board.no_alert"))),
      h("td", { class: "col-since" }, top ? h("span", { class: "since", dataset: { since: top.opened_at } }, since(top.opened_at)) : ""),
      h("td", { class: "col-latest" }, latestEl(r)),
      h("td", { class: "col-adherence" }, adherenceEl(r.adherence)),
      h("td", { class: "col-last" }, r.last_reading_at
        ? h("time", { datetime: r.last_reading_at, title: time(r.last_reading_at), class: "ago", dataset: { ago: r.last_reading_at } }, ago(r.last_reading_at))
        : h("span", { class: "muted" }, t("board.never"))),
      h("td", { class: "col-actions" }, h("div", { class: "actions" },
        top ? actionButtons(top, p.name, { onChange: (a) => applyAlert(a), onError: showError }) : null,
        h("button", {
          type: "button", "data-action": "call", "aria-label": `${t("act.call")}: ${p.name}`,
          onclick: () => callDialog(p.id, p.name, alerts, null, top?.alert_id),
        }, t("act.call")))),
    );
    return tr;
  }

  function alertSummary(a, more, rest) {
    const el = h("div", { class: "alert-summary", dataset: { alertId: a.alert_id, state: a.state, rule: a.rule } },
      h("div", { class: "alert-line" }, severityBadge(a.severity), " ",
        h("strong", {}, ruleName(a.rule)), " ", stateBadge(a)),
      h("div", { class: "explanation" }, a.explanation));
    if (more > 0) {
      el.append(h("details", { class: "more" },
        h("summary", {}, t("board.more_alerts", { n: more })),
        h("ul", {}, rest.map((b) => h("li", { dataset: { alertId: b.alert_id, state: b.state } },
          severityBadge(b.severity), " ", ruleName(b.rule), " · ", stateBadge(b), " — ", b.explanation)))));
    }
    return el;
  }

  function latestEl(r) {
    const latest = r.latest ?? {};
    const sp = r.sparklines ?? {};
    const items = [];
    for (const m of METRICS) {
      let value, series;
      if (m.key === "bp") {
        // The hub names them by metric (sys, dia); the contract said bp_sys.
        const sys = latest.sys ?? latest.bp_sys, dia = latest.dia ?? latest.bp_dia;
        if (!sys) continue;
        value = `${num(sys.value, 0)}/${dia ? num(dia.value, 0) : "–"}`;
        series = [sp.sys ?? sp.bp_sys ?? [], sp.dia ?? sp.bp_dia ?? []];
      } else {
        if (!latest[m.key]) continue;
        value = num(latest[m.key].value, m.digits);
        series = [sp[m.key] ?? []];
      }
      items.push(h("div", { class: "latest", dataset: { metric: m.key } },
        h("span", { class: "latest-label" }, t(m.label)), " ",
        h("span", { class: "latest-value" }, value, " ", h("span", { class: "unit" }, m.unit)), " ",
        cachedSpark(r.patient.id, m.key, series, `${t(m.label)} 14 d`)));
    }
    const news2 = news2Badge(r.news2);
    if (news2) items.push(news2);
    return items.length ? items : h("span", { class: "muted" }, "–");
  }

  // Recreating ~150 small charts on every refetch would be wasteful; a
  // sparkline is rebuilt only when its data changed.
  function cachedSpark(pid, key, series, title) {
    const id = `${pid}\u0000${key}`;
    const sig = JSON.stringify(series);
    const hit = sparkCache.get(id);
    if (hit && hit.sig === sig) return hit.el;
    const el = sparkline(series, { title });
    sparkCache.set(id, { sig, el });
    return el;
  }

  function adherenceEl(adh) {
    if (!adh) return "–";
    const out = [];
    for (const [k, key] of [["measurements", "adh.measurements"], ["doses", "adh.doses"]]) {
      const v = adh[k];
      if (!v || !v.expected) continue;
      const pct = Math.round((100 * v.taken) / v.expected);
      out.push(h("div", { class: `adh ${pct < 80 ? "adh-low" : ""}` },
        t(key, { taken: v.taken, expected: v.expected }), " ",
        h("span", { class: "muted" }, `(${pct} %)`), pct < 80 ? h("span", { "aria-hidden": "true" }, " ▼") : null));
    }
    return out.length ? out : h("span", { class: "muted" }, t("adh.none"));
  }

  function showError(e) {
    errorBox.textContent = errorText(e);
    errorBox.hidden = false;
  }

  /** An alert changed (our own action or a delta): patch its row now. */
  function applyAlert(a, { quiet = false } = {}) {
    if (!a || a.alert_id == null) return;
    const row = rows.find((r) => r.patient.id === a.patient_id);
    const isNew = !known.has(a.alert_id);
    known.add(a.alert_id);
    const seen = recent.get(a.alert_id);
    if (!seen || seen.alert.version <= a.version) recent.set(a.alert_id, { alert: a, at: Date.now() });
    if (row) {
      const list = (row.alerts ?? []).filter((x) => x.alert_id !== a.alert_id);
      const old = (row.alerts ?? []).find((x) => x.alert_id === a.alert_id);
      if (old && old.version > a.version) return; // stale
      if (isActive(a)) list.push(a);
      row.alerts = list.sort(compareAlerts);
      if (isNew && !quiet && loaded && a.state === "open") {
        announce(t("board.new_alert", { patient: row.patient.name, severity: t(`sev.${a.severity}`), text: a.explanation }));
        flash.set(a.patient_id, Date.now() + 8000);
      }
      draw();
    }
    scheduleRefetch();
  }

  const off = live.on((msg) => {
    if (msg.type === "snapshot") {
      // (Re)connected: the snapshot is the truth; refetch the board too.
      for (const a of msg.alerts ?? []) applyAlert(a, { quiet: true });
      scheduleRefetch(0);
    } else if (msg.type === "alert") {
      applyAlert(msg.alert);
    } else if (msg.type === "obs" || msg.type === "patient") {
      const waveform = (msg.records ?? []).every((r) => r.n === "fhr" || r.n === "toco" || r.n === "sigq");
      if (!waveform || msg.type === "patient") scheduleRefetch(2000);
    }
  });

  // Time since opened / last reading, every 30 s, without a refetch.
  const ticker = setInterval(() => {
    for (const el of tbody.querySelectorAll("[data-since]")) el.textContent = since(el.dataset.since);
    for (const el of tbody.querySelectorAll("[data-ago]")) el.textContent = ago(el.dataset.ago);
  }, 30000);
  // And a slow full refresh, in case a delta was missed while hidden.
  const slow = setInterval(() => { if (!document.hidden) scheduleRefetch(0); }, 120000);

  draw();
  fetchBoard();
  return () => {
    off();
    clearInterval(ticker);
    clearInterval(slow);
    clearTimeout(refetchTimer);
  };
}
