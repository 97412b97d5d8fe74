// The audit log (admin): who viewed or changed which patient's data, when,
// from where (the PDL requirement). Filters go to the hub as they are.

import { h, mount, formData } from "./dom.js";
import { get } from "./api.js";
import { t, dateTime } from "./i18n.js";
import { errorText } from "./alerts.js";

const LIMIT = 500;

export function render(container, { me }) {
  const results = h("div", { "aria-live": "polite" });
  const errorBox = h("p", { class: "form-error", role: "alert", hidden: true });
  const field = (name, key, attrs = {}) => h("label", { class: "field" }, h("span", {}, t(key)), h("input", { name, autocomplete: "off", ...attrs }));
  const form = h("form", { class: "inline-form audit-form", role: "search" },
    field("actor", "audit.actor"),
    field("patient", "audit.patient"),
    field("action", "audit.action", { placeholder: "patient.view" }),
    field("from", "audit.from", { type: "datetime-local" }),
    field("to", "audit.to", { type: "datetime-local" }),
    h("button", { type: "submit", class: "primary" }, t("audit.search")));
  mount(container, h("div", { class: "view-head" }, h("h1", {}, t("audit.title"))), form, errorBox, results);
  if (me.role !== "admin") { mount(results, h("p", {}, t("admin.only_admin"))); form.hidden = true; return () => {}; }

  // datetime-local is the PC's local time; the hub wants RFC 3339.
  const iso = (v) => (v ? new Date(v).toISOString() : undefined);
  async function search() {
    const v = formData(form);
    errorBox.hidden = true;
    mount(results, h("p", {}, t("loading")));
    try {
      const rows = await get("/audit", { actor: v.actor, patient: v.patient, action: v.action, from: iso(v.from), to: iso(v.to), limit: LIMIT });
      mount(results,
        h("p", { class: "muted" }, t("audit.count", { n: rows.length, limit: LIMIT })),
        rows.length ? h("table", { class: "compact", id: "audit-results" },
          h("thead", {}, h("tr", {}, ["audit.at", "audit.actor", "audit.action", "audit.patient", "audit.detail", "audit.source"].map((k) => h("th", { scope: "col" }, t(k))))),
          h("tbody", {}, rows.map((r) => h("tr", {},
            h("td", {}, dateTime(r.at)), h("td", {}, r.actor), h("td", {}, r.action),
            h("td", {}, r.patient_id ? h("a", { href: `#/patient/${encodeURIComponent(r.patient_id)}` }, r.patient_id) : ""),
            h("td", {}, r.detail ?? ""), h("td", {}, r.source ?? "")))))
          : h("p", {}, t("audit.empty")));
    } catch (e) {
      mount(results);
      errorBox.textContent = errorText(e);
      errorBox.hidden = false;
    }
  }
  form.addEventListener("submit", (ev) => { ev.preventDefault(); search(); });
  search();
  return () => {};
}
