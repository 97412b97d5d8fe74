// Administration (admin role): patients and their enrolment in care units,
// care units, devices (register, bind, unbind), the quarantine of messages
// from unknown or unbound devices (bind the device or discard with a
// reason), staff and their patient assignments. One tab per hash:
// #/admin/patients, #/admin/units, #/admin/devices, #/admin/quarantine,
// #/admin/staff.

import { h, mount, formData } from "./dom.js";
import { get, post, put, del } from "./api.js";
import { t, dateTime, ago, label } from "./i18n.js";
import { errorText } from "./alerts.js";

const TABS = ["patients", "units", "devices", "quarantine", "staff"];
const PROGRAMS = ["heart_failure", "hypertension", "pregnancy_diabetes", "elderly_at_home"];
const KINDS = ["scale", "bp_cuff", "pulse_oximeter", "thermometer", "fetal_monitor", "dispenser", "fall_sensor"];
const ROLES = ["nurse", "physician", "admin"];
const enc = encodeURIComponent;

export function render(container, { me, params }) {
  const tab = TABS.includes(params[0]) ? params[0] : "patients";
  const status = h("p", { class: "form-ok", role: "status" });
  const errorBox = h("p", { class: "form-error", role: "alert", hidden: true });
  const body = h("div");
  mount(container,
    h("div", { class: "view-head" }, h("h1", {}, t("admin.title"))),
    h("nav", { class: "tabs", "aria-label": t("admin.title") }, TABS.map((k) =>
      h("a", { href: `#/admin/${k}`, "aria-current": k === tab ? "page" : null }, t(`admin.${k}`)))),
    status, errorBox, body);
  if (me.role !== "admin") { mount(body, h("p", {}, t("admin.only_admin"))); return () => {}; }

  const ok = (text) => { errorBox.hidden = true; status.textContent = text; };
  const fail = (e) => { status.textContent = ""; errorBox.textContent = errorText(e); errorBox.hidden = false; };
  /** A form whose submit runs `f(values, form)` and reloads the tab. */
  const form = (cls, f, ...fields) => {
    const el = h("form", { class: `inline-form ${cls}` }, ...fields);
    el.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try { await f(formData(el), el); el.reset(); await load(); } catch (e) { fail(e); }
    });
    return el;
  };
  const input = (name, labelText, attrs = {}) => h("label", { class: "field" }, h("span", {}, labelText), h("input", { name, autocomplete: "off", ...attrs }));
  const select = (name, labelText, options, attrs = {}) => h("label", { class: "field" }, h("span", {}, labelText),
    h("select", { name, ...attrs }, options.map(([v, l]) => h("option", { value: v }, l))));
  const button = (text, f, attrs = {}) => h("button", { type: "button", ...attrs, onclick: async () => { try { await f(); await load(); } catch (e) { fail(e); } } }, text);
  const table = (cols, rows) => h("table", { class: "compact" },
    h("thead", {}, h("tr", {}, cols.map((c) => h("th", { scope: "col" }, c)))), h("tbody", {}, rows));

  let units = [];
  async function loadUnits() {
    try { units = await get("/care-units"); } catch { units = []; }
    return units;
  }

  const views = {
    async patients() {
      const [patients] = await Promise.all([get("/patients"), loadUnits()]);
      const unitOpts = units.map((u) => [u.id, u.name]);
      return [
        h("h2", {}, t("admin.new_patient")),
        form("new-patient", async (v) => {
          await post("/patients", { id: v.id || undefined, name: v.name, program: v.program || undefined });
          ok(t("admin.created"));
        },
        input("name", t("admin.name"), { required: true, maxlength: 200 }),
        input("id", t("admin.id_optional"), { pattern: "[A-Za-z0-9_\\-]{1,64}" }),
        select("program", t("admin.program"), [["", t("program.none")], ...PROGRAMS.map((p) => [p, label("program.", p)])]),
        h("button", { type: "submit", class: "primary" }, t("admin.create"))),
        h("h2", {}, t("admin.patients")),
        table([t("admin.id"), t("admin.name"), t("admin.program"), t("admin.enrol")], patients.map((p) => h("tr", {},
          h("td", {}, h("a", { href: `#/patient/${enc(p.id)}` }, p.id)),
          h("td", {}, p.name),
          h("td", {}, p.program ? label("program.", p.program) : "–"),
          h("td", {}, unitOpts.length ? form("enrol", async (v) => {
            await put(`/patients/${enc(p.id)}/enrolments/${enc(v.unit)}`, {});
            ok(t("admin.enrolled"));
          }, select("unit", t("admin.unit"), unitOpts), h("button", { type: "submit" }, t("admin.enrol")),
          h("button", { type: "button", onclick: async (ev) => {
            const unit = ev.currentTarget.form.unit.value;
            try { await del(`/patients/${enc(p.id)}/enrolments/${enc(unit)}`); ok(t("admin.saved")); } catch (e) { fail(e); }
          } }, t("admin.unenrol"))) : "–")))),
      ];
    },

    async units() {
      await loadUnits();
      return [
        h("h2", {}, t("admin.new_unit")),
        form("new-unit", async (v) => { await post("/care-units", v); ok(t("admin.created")); },
          input("id", t("admin.id"), { required: true, pattern: "[A-Za-z0-9_\\-]{1,64}" }),
          input("name", t("admin.name"), { required: true }),
          select("kind", t("admin.kind"), [["region", t("admin.kind.region")], ["municipality", t("admin.kind.municipality")]]),
          h("button", { type: "submit", class: "primary" }, t("admin.create"))),
        h("h2", {}, t("admin.units")),
        table([t("admin.id"), t("admin.name"), t("admin.kind")], units.map((u) => h("tr", {},
          h("td", {}, u.id), h("td", {}, u.name), h("td", {}, t(`admin.kind.${u.kind}`))))),
      ];
    },

    async devices() {
      const [devices, patients] = await Promise.all([get("/devices"), get("/patients")]);
      const patientOpts = patients.map((p) => [p.id, `${p.name} (${p.id})`]);
      return [
        h("h2", {}, t("admin.new_device")),
        form("new-device", async (v) => {
          await post("/devices", { id: v.id, kind: v.kind });
          if (v.patient_id) await put(`/devices/${enc(v.id)}/binding`, { patient_id: v.patient_id });
          ok(t("admin.created"));
        },
        input("id", t("admin.id"), { required: true, pattern: "[A-Za-z0-9_\\-]{1,64}" }),
        select("kind", t("dev.kind"), KINDS.map((k) => [k, label("kind.", k)])),
        select("patient_id", t("admin.patient"), [["", t("admin.unbound")], ...patientOpts]),
        h("button", { type: "submit", class: "primary" }, t("admin.create"))),
        h("h2", {}, t("admin.devices")),
        table([t("dev.id"), t("dev.kind"), t("admin.bound_to"), t("dev.battery"), t("dev.last_contact"), ""], devices.map((d) => h("tr", {},
          h("td", {}, d.device_id ?? d.id),
          h("td", {}, label("kind.", d.kind)),
          h("td", {}, d.patient_id ? h("a", { href: `#/patient/${enc(d.patient_id)}` }, d.patient_id) : t("admin.unbound")),
          h("td", {}, d.battery_pct != null ? `${Math.round(d.battery_pct)} %` : "–"),
          h("td", {}, d.last_seen_at ? ago(d.last_seen_at) : "–"),
          h("td", {}, d.patient_id
            ? button(t("admin.unbind"), async () => { await del(`/devices/${enc(d.device_id)}/binding`); ok(t("admin.saved")); })
            : form("bind", async (v) => { await put(`/devices/${enc(d.device_id)}/binding`, { patient_id: v.patient_id }); ok(t("admin.saved")); },
              select("patient_id", t("admin.patient"), patientOpts, { required: true }), h("button", { type: "submit" }, t("admin.bind"))))))),
      ];
    },

    async quarantine() {
      const [entries, patients, devices] = await Promise.all([get("/quarantine"), get("/patients"), get("/devices")]);
      const known = new Map(devices.map((d) => [d.device_id, d]));
      const patientOpts = patients.map((p) => [p.id, `${p.name} (${p.id})`]);
      // One row per device: binding or discarding acts on all its messages.
      const byDevice = new Map();
      for (const q of entries) {
        const list = byDevice.get(q.device_id) ?? [];
        list.push(q);
        byDevice.set(q.device_id, list);
      }
      if (!byDevice.size) return [h("p", { class: "muted" }, t("admin.q.empty"))];
      return [table([t("admin.q.device"), t("admin.q.reason"), t("admin.q.received"), t("admin.q.topic"), t("admin.q.bind"), t("admin.q.discard")],
        [...byDevice].map(([dev, list]) => {
          const latest = list[0];
          const reasons = [...new Set(list.map((q) => q.reason))].join(", ");
          return h("tr", { dataset: { device: dev } },
            h("td", {}, dev, h("div", { class: "muted small" }, `${list.length} ×`)),
            h("td", {}, reasons),
            h("td", {}, dateTime(latest.received_at)),
            h("td", { class: "small" }, latest.topic),
            h("td", {}, form("q-bind", async (v) => {
              if (!known.has(dev)) await post("/devices", { id: dev, kind: v.kind });
              await put(`/devices/${enc(dev)}/binding`, { patient_id: v.patient_id });
              ok(t("admin.saved"));
            },
            known.has(dev) ? null : select("kind", t("dev.kind"), KINDS.map((k) => [k, label("kind.", k)])),
            select("patient_id", t("admin.patient"), patientOpts, { required: true }),
            h("button", { type: "submit" }, t("admin.q.bind")))),
            h("td", {}, form("q-discard", async (v) => {
              await post(`/quarantine/${enc(dev)}/discard`, { reason: v.reason });
              ok(t("admin.q.discarded"));
            },
            input("reason", t("admin.q.discard_reason"), { required: true, maxlength: 500 }),
            h("button", { type: "submit" }, t("admin.q.discard")))));
        }))];
    },

    async staff() {
      const [staff, patients] = await Promise.all([get("/staff"), get("/patients"), loadUnits()]);
      const patientOpts = patients.map((p) => [p.id, `${p.name} (${p.id})`]);
      const names = new Map(patients.map((p) => [p.id, p.name]));
      const unitChecks = (selected = []) => h("fieldset", { class: "checks" }, h("legend", {}, t("admin.units_of")),
        units.map((u) => h("label", {}, h("input", { type: "checkbox", name: "units", value: u.id, checked: selected.includes(u.id) }), " ", u.name)));
      const unitsOf = (f) => [...f.querySelectorAll("input[name=units]:checked")].map((c) => c.value);
      const rows = await Promise.all(staff.map(async (s) => {
        let assigned = [];
        try { assigned = await get(`/staff/${enc(s.id)}/assignments`); } catch { assigned = []; }
        const ids = assigned.map((a) => (typeof a === "string" ? a : a.patient_id ?? a.id));
        const active = s.active !== false;
        const edit = form("staff-edit", async (v, f) => {
          await put(`/staff/${enc(s.id)}`, { role: v.role, name: v.name, units: unitsOf(f) });
          ok(t("admin.saved"));
        },
        input("name", t("admin.name"), { value: s.name, required: true }),
        h("label", { class: "field" }, h("span", {}, t("admin.role")),
          h("select", { name: "role" }, ROLES.map((r) => h("option", { value: r, selected: r === s.role }, t(`role.${r}`))))),
        unitChecks((s.units ?? []).map((u) => u.id ?? u)),
        h("button", { type: "submit" }, t("act.save")));
        return h("tr", { dataset: { staff: s.username } },
          h("td", {}, h("strong", {}, s.username), h("div", { class: "muted small" }, active ? t("admin.active") : `✗ ${t("admin.deactivate")}`)),
          h("td", {}, edit,
            button(active ? t("admin.deactivate") : t("admin.activate"), async () => { await put(`/staff/${enc(s.id)}`, { active: !active }); ok(t("admin.saved")); })),
          h("td", {},
            ids.length ? h("ul", { class: "assigned" }, ids.map((pid) => h("li", {}, names.get(pid) ?? pid, " ",
              button(t("admin.unassign"), async () => { await del(`/staff/${enc(s.id)}/assignments/${enc(pid)}`); ok(t("admin.saved")); }, { class: "small" }))))
              : h("p", { class: "muted" }, t("admin.none")),
            form("assign", async (v) => { await put(`/staff/${enc(s.id)}/assignments/${enc(v.patient_id)}`, {}); ok(t("admin.saved")); },
              select("patient_id", t("admin.patient"), patientOpts, { required: true }), h("button", { type: "submit" }, t("admin.assign")))));
      }));
      const create = form("new-staff", async (v, f) => {
        await post("/staff", { username: v.username, name: v.name, role: v.role, password: v.password, units: unitsOf(f) });
        ok(t("admin.created"));
      },
      input("username", t("admin.username"), { required: true, pattern: "[A-Za-z0-9_.\\-]{1,64}" }),
      input("name", t("admin.name"), { required: true }),
      h("label", { class: "field" }, h("span", {}, t("admin.role")), h("select", { name: "role" }, ROLES.map((r) => h("option", { value: r }, t(`role.${r}`))))),
      input("password", t("admin.password"), { type: "password", required: true, minlength: 10, autocomplete: "new-password" }),
      unitChecks(),
      h("button", { type: "submit", class: "primary" }, t("admin.create")));
      return [
        h("h2", {}, t("admin.new_staff")), create,
        h("h2", {}, t("admin.staff")),
        table([t("admin.username"), t("admin.role"), t("admin.assignments")], rows),
      ];
    },
  };

  async function load() {
    try { mount(body, ...(await views[tab]())); } catch (e) { mount(body); fail(e); }
  }
  mount(body, h("p", {}, t("loading")));
  load();
  return () => {};
}
