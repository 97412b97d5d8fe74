// The shift handover: per patient, what happened since the last shift and
// what is still open. Printable (css/print.css hides the app around it).

import { h, mount } from "./dom.js";
import { get } from "./api.js";
import { t, dateTime, ruleName, label } from "./i18n.js";
import { severityBadge, stateText, compareAlerts, errorText } from "./alerts.js";

/** "Larm Fall: kvitterat (ssk-anna) — ringt" from a handover event. */
function eventText(e) {
  if (e.text) return e.text;
  const kind = label("handover.kind.", e.kind);
  const action = e.kind === "call" ? label("call.", e.action) : label("handover.action.", e.action);
  const what = e.rule ? `${kind} ${ruleName(e.rule)}` : kind;
  return `${what}: ${action}${e.actor ? ` (${e.actor})` : ""}${e.note ? ` — ${e.note}` : ""}`;
}

export function render(container) {
  const body = h("div", {}, h("p", {}, t("loading")));
  const period = h("p", { class: "muted" });
  const hours = h("select", { name: "hours", "aria-label": t("handover.since") },
    [[8, "handover.last8"], [12, "handover.last12"], [24, "handover.last24"]].map(([v, k]) => h("option", { value: v, selected: v === 12 }, t(k))));
  mount(container,
    h("div", { class: "view-head" },
      h("h1", {}, t("handover.title")),
      h("div", { class: "no-print toolbar" },
        h("label", {}, t("handover.since"), " ", hours),
        h("button", { type: "button", onclick: load }, t("handover.refresh")),
        h("button", { type: "button", class: "primary", onclick: () => window.print() }, t("handover.print")))),
    period, body);
  hours.addEventListener("change", load);

  async function load() {
    const since = new Date(Date.now() - Number(hours.value) * 3600000).toISOString();
    try {
      const r = await get("/handover", { since });
      period.textContent = t("handover.period", { since: dateTime(r.since), until: dateTime(r.until) });
      const patients = r.patients ?? [];
      if (!patients.length) { mount(body, h("p", {}, t("handover.empty"))); return; }
      mount(body, patients.map((p) => {
        const open = (p.open_alerts ?? []).slice().sort(compareAlerts);
        const events = (p.events ?? []).slice().sort((a, b) => Date.parse(a.at) - Date.parse(b.at));
        return h("article", { class: "handover-patient", dataset: { patient: p.patient.id } },
          h("h2", {}, p.patient.name, " ", h("span", { class: "muted small" }, p.patient.id)),
          h("h3", {}, t("handover.open")),
          open.length ? h("ul", {}, open.map((a) => h("li", {}, severityBadge(a.severity), " ", h("strong", {}, ruleName(a.rule)),
            ` (${stateText(a)}, ${dateTime(a.opened_at)}): `, a.explanation)))
            : h("p", { class: "muted" }, t("handover.none_open")),
          h("h3", {}, t("handover.events")),
          events.length ? h("ul", { class: "events" }, events.map((e) => h("li", {},
            h("time", { datetime: e.at }, dateTime(e.at)), " · ", eventText(e))))
            : h("p", { class: "muted" }, t("handover.nothing")));
      }));
    } catch (e) {
      mount(body, h("p", { class: "form-error", role: "alert" }, errorText(e)));
    }
  }
  load();
  return () => {};
}
