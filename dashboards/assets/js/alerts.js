// Alerts as the UI shows them (severity with icon, word and colour; never
// colour alone) and the actions on them: acknowledge, snooze, resolve, and
// the call log, each in a <dialog> that works from the keyboard.

import { h, formData, announce } from "./dom.js";
import { post, ApiError } from "./api.js";
import { t, time, label, ruleName } from "./i18n.js";

const ICON = { high: "⚠", medium: "▲", low: "●", missing: "◌", stable: "✓" };

/** A severity badge: icon + word + colour. */
export function severityBadge(sev) {
  return h("span", { class: `sev sev-${sev}` },
    h("span", { class: "sev-icon", "aria-hidden": "true" }, ICON[sev] ?? "•"), " ", t(`sev.${sev}`));
}

/** A board level badge (high, medium, missing, stable). */
export function levelBadge(level) {
  return h("span", { class: `sev sev-${level}` },
    h("span", { class: "sev-icon", "aria-hidden": "true" }, ICON[level] ?? "•"), " ", t(`level.${level}`));
}

/** The alert's state in words, e.g. "Vilande till 14:30". */
export function stateText(a) {
  const state = a.state === "resolved" && a.outcome === "withdrawn" ? "withdrawn" : a.state;
  if (state === "snoozed" && a.snoozed_until) {
    return `${t("state.snoozed")} (${t("state.snoozed_until", { time: time(a.snoozed_until) })})`;
  }
  return t(`state.${state}`);
}

export function stateBadge(a) {
  const badge = h("span", { class: `state state-${a.state}` }, stateText(a));
  if (!a.escalation_level || !isActive(a)) return badge;
  return h("span", {}, badge, " ", h("span", { class: "state state-escalated" },
    h("span", { "aria-hidden": "true" }, "⇧ "), t("state.escalated", { n: a.escalation_level })));
}

export function isActive(a) {
  return a.state === "open" || a.state === "acknowledged" || a.state === "snoozed";
}

export const SEV_RANK = { high: 0, medium: 1, low: 2 };

/**
 * Where an alert puts its patient on the board, as the hub ranks levels:
 * high, then medium, then missing data (a missing reading or an offline
 * device, whatever its severity), then the rest; a snoozed alert waits
 * for its time and comes last.
 */
function boardRank(a) {
  if (a.state === "snoozed") return 9;
  if (a.severity === "high") return 0;
  const missing = a.category === "missing_data" || a.rule === "device_offline";
  if (missing) return 2;
  return a.severity === "medium" ? 1 : 3;
}

/** Worst first (the alert that sets the row's level on top), then the oldest waiting. */
export function compareAlerts(a, b) {
  return boardRank(a) - boardRank(b)
    || (SEV_RANK[a.severity] ?? 9) - (SEV_RANK[b.severity] ?? 9)
    || Date.parse(a.attention_since ?? a.opened_at) - Date.parse(b.attention_since ?? b.opened_at);
}

/** The words of an error answer, for a nurse. */
export function errorText(e) {
  if (e instanceof ApiError) {
    if (e.status === 0) return t("error.network");
    if (e.status === 403) return e.detail || t("error.forbidden");
    if (e.status === 404) return t("error.notfound");
    return t("error.generic", { detail: e.detail || e.code || e.status });
  }
  return t("error.generic", { detail: String(e?.message ?? e) });
}

/**
 * Opens a modal dialog with `fields` (form content) and a submit button;
 * `submit(values)` may throw, and its error is shown in the dialog.
 */
export function dialog({ title, intro, fields, submitLabel, submit, className }) {
  const error = h("p", { class: "form-error", role: "alert", hidden: true });
  const titleId = `dlg-${Math.random().toString(36).slice(2)}`;
  const form = h("form", { class: "dialog-form", novalidate: false },
    h("h2", { id: titleId }, title),
    intro ? h("p", { class: "muted" }, intro) : null,
    fields,
    error,
    h("div", { class: "dialog-buttons" },
      h("button", { type: "submit", class: "primary" }, submitLabel),
      h("button", { type: "button", onclick: () => dlg.close() }, t("act.cancel"))));
  const dlg = h("dialog", { "aria-labelledby": titleId, class: className ?? null }, form);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    error.hidden = true;
    try {
      await submit(formData(form), form);
      dlg.close();
    } catch (e) {
      error.textContent = errorText(e);
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
  dlg.addEventListener("close", () => dlg.remove());
  document.body.append(dlg);
  dlg.showModal();
  return dlg;
}

function field(labelText, control) {
  return h("label", { class: "field" }, h("span", {}, labelText), control);
}

export async function acknowledge(a, patientName) {
  const updated = await post(`/alerts/${a.alert_id}/acknowledge`);
  announce(t("act.acknowledged", { patient: patientName ?? a.patient_id ?? "" }));
  return updated;
}

export function snoozeDialog(a, onDone) {
  const opts = [[30, "snooze.m30"], [60, "snooze.h1"], [120, "snooze.h2"], [240, "snooze.h4"],
    [480, "snooze.h8"], [1440, "snooze.h24"]];
  dialog({
    title: `${t("snooze.title")}: ${ruleName(a.rule)}`,
    intro: t("snooze.limit", { n: a.snooze_count ?? 0 }),
    fields: [
      h("p", {}, a.explanation),
      field(t("snooze.minutes"), h("select", { name: "minutes", required: true },
        opts.map(([m, k]) => h("option", { value: m, selected: m === 60 }, t(k))))),
      field(t("snooze.reason"), h("input", { name: "reason", required: true, maxlength: 500, autocomplete: "off" })),
    ],
    submitLabel: t("act.snooze"),
    submit: async (v) => {
      const updated = await post(`/alerts/${a.alert_id}/snooze`, { minutes: Number(v.minutes), reason: v.reason });
      onDone?.(updated);
    },
  });
}

export const OUTCOMES = ["called_patient", "home_visit", "medication_changed", "referred", "no_action", "false_alarm"];

export function resolveDialog(a, onDone) {
  dialog({
    title: `${t("resolve.title")}: ${ruleName(a.rule)}`,
    fields: [
      h("p", {}, a.explanation),
      field(t("resolve.outcome"), h("select", { name: "outcome", required: true },
        OUTCOMES.map((o) => h("option", { value: o }, label("outcome.", o))))),
      field(t("resolve.note"), h("textarea", { name: "note", rows: 3, maxlength: 4000 })),
    ],
    submitLabel: t("act.resolve"),
    submit: async (v) => {
      const updated = await post(`/alerts/${a.alert_id}/resolve`, { outcome: v.outcome, note: v.note || null });
      onDone?.(updated);
    },
  });
}

export const CALL_OUTCOMES = ["reached", "no_answer", "left_message"];

/** Logs a call to the patient, optionally about one of `alerts`. */
export function callDialog(patientId, patientName, alerts, onDone, preselect) {
  dialog({
    title: `${t("call.title")}: ${patientName}`,
    fields: [
      field(t("call.outcome"), h("select", { name: "outcome", required: true },
        CALL_OUTCOMES.map((o) => h("option", { value: o }, t(`call.${o}`))))),
      field(t("call.link_alert"), h("select", { name: "alert_id" },
        h("option", { value: "" }, t("call.no_alert")),
        alerts.map((a) => h("option", { value: a.alert_id, selected: a.alert_id === preselect },
          `${t(`sev.${a.severity}`)}: ${ruleName(a.rule)}`)))),
      field(t("call.note"), h("textarea", { name: "note", rows: 3, maxlength: 4000 })),
    ],
    submitLabel: t("act.save"),
    submit: async (v) => {
      const saved = await post(`/patients/${encodeURIComponent(patientId)}/calls`, {
        outcome: v.outcome,
        note: v.note,
        alert_id: v.alert_id ? Number(v.alert_id) : null,
      });
      onDone?.(saved);
    },
  });
}

/** Buttons for the actions that apply to `a` in its state. */
export function actionButtons(a, patientName, { onChange, onError } = {}) {
  const buttons = [];
  const run = async (f) => {
    try { onChange?.(await f()); } catch (e) { onError ? onError(e) : window.alert(errorText(e)); }
  };
  const what = `${ruleName(a.rule)}, ${patientName ?? ""}`;
  if (a.state === "open" || a.state === "snoozed") {
    buttons.push(h("button", {
      type: "button", class: "primary", "data-action": "acknowledge",
      "aria-label": `${t("act.acknowledge")}: ${what}`,
      onclick: (ev) => { ev.currentTarget.disabled = true; run(() => acknowledge(a, patientName)); },
    }, t("act.acknowledge")));
  }
  if (a.severity !== "high" && a.state !== "snoozed") {
    buttons.push(h("button", {
      type: "button", "data-action": "snooze", "aria-label": `${t("act.snooze")}: ${what}`,
      onclick: () => snoozeDialog(a, onChange),
    }, t("act.snooze")));
  }
  buttons.push(h("button", {
    type: "button", "data-action": "resolve", "aria-label": `${t("act.resolve")}: ${what}`,
    onclick: () => resolveDialog(a, onChange),
  }, t("act.resolve")));
  return buttons;
}
