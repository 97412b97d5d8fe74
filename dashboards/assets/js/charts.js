// Time-series charts on uPlot (vendored, see vendor/README.md): the board's
// sparklines and the patient view's trends. Times are shown in Stockholm
// time whatever the PC's own zone.

import uPlot from "../vendor/uPlot.esm.js";
import { h } from "./dom.js";
import { t, num, shortDate } from "./i18n.js";

export { uPlot };

const TZ = "Europe/Stockholm";
const tzDate = (ts) => uPlot.tzDate(new Date(ts * 1e3), TZ);

// Colour-blind-safe pair (blue/orange) with different dash patterns, so
// two lines are told apart without colour too.
export const COLORS = { a: "#0b5cad", b: "#c25400", ref: "#2f7d32", grid: "#d8dde3" };

/**
 * A 14-day sparkline: `series` is a list of [[t_ms, value], …] (one or two,
 * e.g. systolic and diastolic). Returns a detached element.
 */
export function sparkline(series, { width = 96, height = 26, title = "" } = {}) {
  const el = h("span", { class: "spark", role: "img", "aria-label": title });
  const xs = [...new Set(series.flatMap((s) => s.map((p) => p[0])))].sort((a, b) => a - b);
  if (xs.length < 2) return el;
  const data = [xs.map((x) => x / 1000)];
  for (const s of series) {
    const byT = new Map(s.map((p) => [p[0], p[1]]));
    data.push(xs.map((x) => (byT.has(x) ? byT.get(x) : null)));
  }
  const opts = {
    width, height,
    pxAlign: false,
    cursor: { show: false },
    select: { show: false },
    legend: { show: false },
    // Each line on its own scale: a sparkline shows the shape of a trend
    // (systolic and diastolic would otherwise both look flat).
    scales: Object.fromEntries([["x", { time: false }], ...series.map((_, i) => [`y${i}`, {}])]),
    axes: [{ show: false }, { show: false, scale: "y0" }],
    series: [{}, ...series.map((_, i) => ({
      scale: `y${i}`, stroke: i === 0 ? COLORS.a : COLORS.b, width: 1.5, spanGaps: true,
      points: { show: false },
    }))],
  };
  // uPlot measures its root; draw after the element is in the page.
  queueMicrotask(() => new uPlot(opts, data, el));
  return el;
}

/**
 * A trend chart into `container`: `lines` is [{label, points: [{t, v}],
 * dash?}]; `refs` horizontal reference lines [{label, value}] (dry weight,
 * thresholds). Resizes with its container. Returns the uPlot instance.
 */
export function trendChart(container, { lines, refs = [], unit = "", fromMs, toMs, height = 200, yRange }) {
  const xs = [...new Set(lines.flatMap((l) => l.points.map((p) => p.t)))].sort((a, b) => a - b);
  const data = [xs.map((x) => x / 1000)];
  for (const l of lines) {
    const byT = new Map(l.points.map((p) => [p.t, p.v]));
    data.push(xs.map((x) => (byT.has(x) ? byT.get(x) : null)));
  }
  for (const r of refs) data.push(xs.map(() => r.value));
  const palette = [COLORS.a, COLORS.b];
  const opts = {
    width: Math.max(280, container.clientWidth || 600),
    height,
    tzDate,
    scales: {
      x: { time: true, range: () => [fromMs / 1000, toMs / 1000] },
      y: yRange ? { range: yRange } : {
        range: (u, min, max) => {
          const vals = [min, max, ...refs.map((r) => r.value)].filter(Number.isFinite);
          const lo = Math.min(...vals), hi = Math.max(...vals);
          const pad = Math.max(1, (hi - lo) * 0.15);
          return [Math.floor(lo - pad), Math.ceil(hi + pad)];
        },
      },
    },
    axes: [
      // Dates as people here write them ("3 dec"), not uPlot's US default.
      { grid: { stroke: COLORS.grid }, ticks: { stroke: COLORS.grid }, values: (u, splits) => splits.map((s) => shortDate(s * 1000)) },
      { grid: { stroke: COLORS.grid }, ticks: { stroke: COLORS.grid }, label: unit, size: 55 },
    ],
    series: [
      { label: t("chart.time"), value: (u, v) => (v == null ? "–" : new Date(v * 1000).toLocaleString(undefined, { timeZone: TZ })) },
      ...lines.map((l, i) => ({
        label: l.label, stroke: palette[i % 2], width: 2, spanGaps: true,
        dash: i === 1 ? [6, 3] : undefined,
        points: { show: true, size: 5, fill: palette[i % 2] },
        value: (u, v) => (v == null ? "–" : `${num(v)} ${unit}`),
      })),
      ...refs.map((r) => ({
        label: r.label, stroke: COLORS.ref, width: 1.5, dash: [2, 4], points: { show: false },
        value: () => `${num(r.value)} ${unit}`,
      })),
    ],
  };
  const u = new uPlot(opts, data, container);
  const ro = new ResizeObserver(() => {
    const w = container.clientWidth;
    if (w > 0 && Math.abs(w - u.width) > 4) u.setSize({ width: w, height });
  });
  ro.observe(container);
  u.__ro = ro;
  return u;
}

/** A text alternative for a chart: the latest value and the range. */
export function chartSummary(points, unit) {
  if (!points.length) return t("patient.no_data");
  const vals = points.map((p) => p.v);
  const last = points[points.length - 1];
  return `${num(last.v)} ${unit} (min ${num(Math.min(...vals))}, max ${num(Math.max(...vals))})`;
}
