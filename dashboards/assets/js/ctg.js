// The CTG viewer: fetal heart rate and uterine activity on the standard
// paper grid (FHR 50–210 bpm, major lines every 30 bpm and minor every 10;
// toco 0–100; 1 cm per minute, so a 40-minute session is 40 cm wide and
// scrolls sideways). The traces are uPlot series; the paper (grid, the
// normal band 110–160, the baseline) is painted under them in uPlot's
// drawClear hook. Live mode appends the 4 Hz samples as they arrive.

import { h } from "./dom.js";
import { uPlot } from "./charts.js";
import { t, num, dateTime, duration } from "./i18n.js";

// A CSS centimetre is 96/2.54 px; at 1 cm/min that is the width of a minute.
export const PX_PER_MIN = 96 / 2.54;
const FHR = { min: 50, max: 210, major: 30, minor: 10 };
const TOCO = { min: 0, max: 100, major: 25, minor: 5 };
const Y_AXIS = 44; // px of the value axis left of the paper
const GAP_S = 1; // a step longer than this is signal loss: the trace breaks
const TZ = "Europe/Stockholm";
const hm = new Intl.DateTimeFormat("sv-SE", { timeZone: TZ, hour: "2-digit", minute: "2-digit" });

function paper(grid, { band, baseline } = {}) {
  return (u) => {
    const { ctx } = u;
    const { left, top, width, height } = u.bbox;
    const x0 = u.scales.x.min, x1 = u.scales.x.max;
    ctx.save();
    ctx.fillStyle = "#fff8f6";
    ctx.fillRect(left, top, width, height);
    if (band) {
      const ya = u.valToPos(band[1], "y", true), yb = u.valToPos(band[0], "y", true);
      ctx.fillStyle = "rgba(47,125,50,0.08)";
      ctx.fillRect(left, ya, width, yb - ya);
    }
    const line = (x, y, x2, y2, color, w) => {
      ctx.strokeStyle = color; ctx.lineWidth = w;
      ctx.beginPath(); ctx.moveTo(x, y); ctx.lineTo(x2, y2); ctx.stroke();
    };
    const dpr = uPlot.pxRatio;
    for (let v = grid.min; v <= grid.max; v += grid.minor) {
      const y = Math.round(u.valToPos(v, "y", true)) + 0.5;
      const major = v % grid.major === 0;
      line(left, y, left + width, y, major ? "#e0a39a" : "#f0c9c1", (major ? 1.2 : 0.6) * dpr);
    }
    // Vertical lines: every minute (1 cm), stronger every 10 minutes.
    const first = Math.ceil(x0 / 60) * 60;
    for (let s = first; s <= x1; s += 60) {
      const x = Math.round(u.valToPos(s, "x", true)) + 0.5;
      const major = Math.round(s / 60) % 10 === 0;
      line(x, top, x, top + height, major ? "#e0a39a" : "#f0c9c1", (major ? 1.2 : 0.6) * dpr);
    }
    const b = baseline?.();
    if (Number.isFinite(b)) {
      const y = u.valToPos(b, "y", true);
      ctx.setLineDash([8 * dpr, 5 * dpr]);
      line(left, y, left + width, y, "#2f7d32", 1.5 * dpr);
      ctx.setLineDash([]);
    }
    ctx.restore();
  };
}

function axes(grid, label) {
  return [
    {
      stroke: "#555",
      grid: { show: false },
      ticks: { show: true, stroke: "#999" },
      // Labels every 5 minutes on the wall clock, in Stockholm time.
      splits: (u, i, min, max) => {
        const out = [];
        for (let s = Math.ceil(min / 300) * 300; s <= max; s += 300) out.push(s);
        return out;
      },
      values: (u, splits) => splits.map((s) => hm.format(new Date(s * 1000))),
      size: 28,
    },
    {
      stroke: "#555",
      label,
      labelSize: 14,
      size: Y_AXIS,
      grid: { show: false },
      // The edges and every major line (multiples of 30 bpm: 60 … 210).
      splits: () => {
        const out = [grid.min];
        for (let v = Math.ceil((grid.min + 1) / grid.major) * grid.major; v <= grid.max; v += grid.major) out.push(v);
        if (out[out.length - 1] !== grid.max) out.push(grid.max);
        return out;
      },
    },
  ];
}

/**
 * A viewer in `container` for a session starting at `startMs`.
 * Returns {append(samples), setSummary(summary), destroy()} where samples
 * are [{t: ms, n: "fhr"|"toco", v}].
 */
export function ctgViewer(container, { startMs, endMs = null, samples = [], summary = null, live = false }) {
  const fhr = [[], []];
  const toco = [[], []];
  let count = 0;
  let current = summary;
  const startS = startMs / 1000;
  const minSpanS = 10 * 60;

  const countEl = h("span", { class: "ctg-count", "data-samples": "0" }, t("ctg.samples", { n: 0 }));
  const summaryTitle = h("h3", {}, t("ctg.summary"));
  const summaryEl = h("dl", { class: "ctg-summary" });
  let running = null; // the figures so far of a session still running
  // The scale, for people and tests: it is drawn on canvas, not in text.
  const scroller = h("div", {
    class: "ctg-scroll", tabindex: "0", role: "region", "aria-label": `${t("ctg.title")}. ${t("ctg.paper")}`,
    dataset: { fhrMin: FHR.min, fhrMax: FHR.max, tocoMax: TOCO.max, pxPerMin: PX_PER_MIN.toFixed(2) },
  });
  const fhrEl = h("div", { class: "ctg-fhr" });
  const tocoEl = h("div", { class: "ctg-toco" });
  scroller.append(fhrEl, tocoEl);
  container.replaceChildren(
    h("div", { class: "ctg-head" },
      h("strong", {}, live ? h("span", { class: "live-dot" }, h("span", { "aria-hidden": "true" }, "● "), t("ctg.live")) : t("ctg.past", { start: dateTime(new Date(startMs).toISOString()) })),
      " · ", countEl, " · ", h("span", { class: "muted" }, t("ctg.paper"))),
    scroller,
    summaryTitle,
    summaryEl);

  const spanEnd = () => {
    const last = fhr[0].length ? fhr[0][fhr[0].length - 1] : startS;
    const end = endMs ? endMs / 1000 : last;
    return Math.max(startS + minSpanS, end + (live ? 60 : 0));
  };
  const widthFor = () => Math.ceil(((spanEnd() - startS) / 60) * PX_PER_MIN) + Y_AXIS + 12;

  const baseline = () => current?.baseline_bpm ?? running?.baseline_bpm;
  const common = (height, grid, label, stroke, band) => ({
    width: widthFor(),
    height,
    padding: [6, 12, 0, 0],
    legend: { show: false },
    cursor: { drag: { x: false, y: false } },
    select: { show: false },
    scales: {
      x: { time: false, range: () => [startS, spanEnd()] },
      y: { range: [grid.min, grid.max] },
    },
    axes: axes(grid, label),
    series: [{}, { stroke, width: 1.4, spanGaps: false, points: { show: false } }],
    hooks: { drawClear: [paper(grid, { band, baseline })] },
  });
  // 20 bpm per cm (8 cm for 160 bpm) and 25 units per cm (4 cm for toco).
  const fhrPlot = new uPlot(common(Math.round(8 * PX_PER_MIN) + 34, FHR, t("ctg.fhr_axis"), "#1a1a1a", [110, 160]), fhr, fhrEl);
  const tocoPlot = new uPlot(common(Math.round(4 * PX_PER_MIN) + 34, TOCO, t("ctg.toco_axis"), "#0b5cad"), toco, tocoEl);

  function push(series, ts, v) {
    const [xs, ys] = series;
    const last = xs.length ? xs[xs.length - 1] : null;
    if (last !== null && ts <= last) {
      if (ts === last) return false; // a redelivered sample
      // Out of order (rare): insert in place.
      let i = xs.length - 1;
      while (i > 0 && xs[i - 1] > ts) i--;
      if (xs[i - 1] === ts) return false;
      xs.splice(i, 0, ts); ys.splice(i, 0, v);
      return true;
    }
    if (last !== null && ts - last > GAP_S) { xs.push(last + 0.25); ys.push(null); }
    xs.push(ts); ys.push(v);
    return true;
  }

  function append(list) {
    let changed = false;
    for (const s of list) {
      const ts = s.t / 1000;
      if (ts < startS - 1) continue;
      if (s.n === "fhr") { if (push(fhr, ts, s.v)) { count++; changed = true; } }
      else if (s.n === "toco") { if (push(toco, ts, Math.min(100, s.v))) changed = true; }
    }
    if (!changed) return;
    const atEnd = scroller.scrollLeft + scroller.clientWidth >= scroller.scrollWidth - 40;
    const w = widthFor();
    if (w !== fhrPlot.width) {
      fhrPlot.setSize({ width: w, height: fhrPlot.height });
      tocoPlot.setSize({ width: w, height: tocoPlot.height });
    }
    fhrPlot.setData(fhr);
    tocoPlot.setData(toco);
    countEl.textContent = t("ctg.samples", { n: count });
    countEl.dataset.samples = String(count);
    // Follow the pen while the nurse has not scrolled back.
    if (live && atEnd) scroller.scrollLeft = scroller.scrollWidth;
  }

  const item = (k, v) => [h("dt", {}, t(k)), h("dd", {}, v)];

  function setSummary(s) {
    current = s;
    summaryTitle.textContent = t("ctg.summary");
    delete summaryEl.dataset.running;
    summaryEl.replaceChildren();
    if (!s) {
      summaryEl.append(h("dd", { class: "muted" }, t("ctg.summary_pending")));
    } else {
      summaryEl.append(
        ...item("ctg.duration", duration(s.duration_ms ?? 0)),
        ...item("ctg.baseline", s.baseline_bpm != null ? `${num(s.baseline_bpm, 0)} bpm` : "–"),
        ...item("ctg.stv", s.stv_ms != null ? `${num(s.stv_ms, 1)} ms (${s.stv_minutes ?? 0} min)` : "–"),
        ...item("ctg.accelerations", s.accelerations ?? "–"),
        ...item("ctg.decelerations", s.decelerations ?? "–"),
        ...item("ctg.long_decelerations", s.long_decelerations ?? "–"),
        ...item("ctg.contractions", s.contractions ?? "–"),
        ...item("ctg.signal_loss", s.signal_loss_pct != null ? `${num(s.signal_loss_pct, 1)} %` : "–"));
    }
    fhrPlot.redraw(false);
  }

  // The figures so far of a session still running, as the hub's analysis
  // has them (`ctg_status` frames, one a pack); the stored summary takes
  // their place when the session ends.
  function setRunning(s) {
    if (current) return;
    running = s;
    summaryTitle.textContent = t("ctg.running");
    summaryEl.dataset.running = "true";
    summaryEl.replaceChildren(
      ...item("ctg.elapsed", duration(s.elapsed_ms ?? 0)),
      ...item("ctg.baseline_10min", s.baseline_bpm != null ? `${num(s.baseline_bpm, 0)} bpm` : t("ctg.baseline_pending")),
      ...item("ctg.stv", s.stv_ms != null ? `${num(s.stv_ms, 1)} ms (${s.stv_minutes ?? 0} min)` : "–"),
      ...item("ctg.accelerations", s.accelerations ?? "–"),
      ...item("ctg.decelerations", s.decelerations ?? "–"),
      ...item("ctg.long_decelerations", s.long_decelerations ?? "–"),
      ...item("ctg.signal_loss", s.signal_loss_pct != null ? `${num(s.signal_loss_pct, 1)} %` : "–"));
    fhrPlot.redraw(false);
  }

  append(samples);
  setSummary(summary);
  if (live) scroller.scrollLeft = scroller.scrollWidth;
  return {
    append,
    setSummary,
    setRunning,
    get count() { return count; },
    destroy() { fhrPlot.destroy(); tocoPlot.destroy(); },
  };
}
