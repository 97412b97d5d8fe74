// NEWS2 as the hub computes it from the vital signs of the last day (see
// hub/src/news2.rs). At home it is nearly always partial: respiration rate,
// oxygen and consciousness are not measured, so the score is a lower bound
// and is shown as "at least".

import { h } from "./dom.js";
import { t, num, time } from "./i18n.js";

const UNITS = { spo2: "%", sys: "mmHg", hr: "/min", temp: "°C" };
const DIGITS = { temp: 1 };

function scoreText(n) {
  return t(n.missing?.length ? "news2.at_least" : "news2.exactly", { n: n.score });
}

/** The short form, for a board row: "NEWS2 ≥ 5", the risk in words. */
export function news2Badge(n) {
  if (!n) return null;
  const parts = (n.parameters ?? []).map((p) => `${t(`news2.param.${p.name}`)} ${t("news2.points", { n: p.points })}`);
  return h("div", {
    class: `news2 news2-${n.risk}`, dataset: { news2: String(n.score), risk: n.risk },
    title: `${t("news2.label")} (${t("news2.window")}): ${scoreText(n)}, ${t(`news2.risk.${n.risk}`)}. ${parts.join(", ")}`,
  }, h("span", { class: "latest-label" }, t("news2.label")), " ",
    h("span", { class: "latest-value" }, scoreText(n)), " ",
    h("span", { class: "muted small" }, t(`news2.risk.${n.risk}`)));
}

/** The long form, for the patient view: every parameter with its points. */
export function news2Detail(n) {
  if (!n) return null;
  const params = (n.parameters ?? []).map((p) =>
    h("li", {}, `${t(`news2.param.${p.name}`)} ${num(p.value, DIGITS[p.name] ?? 0)} ${UNITS[p.name] ?? ""} · `,
      h("strong", {}, t("news2.points", { n: p.points })), h("span", { class: "muted" }, ` (${time(p.at)})`)));
  const missing = (n.missing ?? []).map((m) => t(`news2.param.${m}`)).join(", ");
  return h("div", { class: `news2-detail news2-${n.risk}`, dataset: { news2: String(n.score), risk: n.risk } },
    h("p", {}, h("strong", {}, `${t("news2.label")} (${t("news2.window")}): ${scoreText(n)}`), " · ",
      t(`news2.risk.${n.risk}`), " · ", h("span", { class: "muted" }, t(`news2.scale.${n.scale}`))),
    h("ul", { class: "news2-params" }, params),
    missing ? h("p", { class: "muted small" }, t("news2.missing", { list: missing }), " ", t("news2.partial_note")) : null);
}
