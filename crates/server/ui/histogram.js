// The volume histogram above the logs: records per time bucket, stacked by
// level, from `GET /v1/histogram`, over the time the lines span (see
// `fitWindow`). Dragging across it zooms the view to the dragged range;
// hovering shows a bucket's counts.

import { h, svg, replace, count } from "./dom.js";
import { LEVELS, clock, parseTime, spansDays } from "./format.js";

const HEIGHT = 96;
const AXIS = 18;
/** Pixels per bucket the histogram aims for. */
const BUCKET_WIDTH = 9;
const MAX_BUCKETS = 240;
/** Bucket widths, in ms, that read well on an axis: the least that fits is taken. */
const STEPS = [
  1, 2, 5, 10, 20, 50, 100, 200, 500,
  1e3, 2e3, 5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3, 1800e3,
  3600e3, 7200e3, 10800e3, 21600e3, 43200e3, 86400e3, 172800e3, 604800e3,
];
/** The least span a histogram shows (a lone line sits in its middle). */
const MIN_SPAN_MS = 1000;

/**
 * The histogram's window and buckets for lines from `first` to `last` (ms;
 * null when none match) in a range `[since, until)`: the lines' span with a
 * little room on each side (up to `until` while `live`, where new lines
 * land), cut to buckets of a round width (`STEPS`) that start on a multiple
 * of it, at most `buckets` of them, and kept within the range. With no
 * lines, the whole range.
 */
export function fitWindow({ since, until, first, last, live, buckets }) {
  if (first == null || last == null) return { since, until, buckets };
  let start = first;
  let end = live ? Math.max(until, last + 1) : last + 1;
  if (end - start < MIN_SPAN_MS) {
    const middle = (start + end) / 2;
    [start, end] = [middle - MIN_SPAN_MS / 2, middle + MIN_SPAN_MS / 2];
  }
  const room = (end - start) * 0.04;
  [start, end] = [start - room, live ? end : end + room];
  const step = STEPS.find((ms) => ms * buckets >= end - start) ?? Math.ceil((end - start) / buckets);
  const from = Math.max(since, Math.floor(start / step) * step);
  const to = Math.min(live ? end : until, Math.ceil(end / step) * step);
  return { since: from, until: to, buckets: Math.max(1, Math.min(buckets, Math.ceil((to - from) / step))) };
}

export class Histogram {
  constructor({ onZoom }) {
    this.onZoom = onZoom;
    this.data = null;
    this.plot = h("div", { class: "histogram-plot" });
    this.note = h("div", { class: "histogram-note" });
    this.tip = h("div", { class: "histogram-tip", hidden: true });
    this.element = h("section", { class: "histogram", "aria-label": "volume over time, by level" }, this.plot, this.tip, this.note);
    new ResizeObserver(() => this.draw()).observe(this.plot);
  }

  /** How many buckets fit the current width. */
  buckets() {
    const width = this.plot.clientWidth || 800;
    return Math.max(10, Math.min(MAX_BUCKETS, Math.floor(width / BUCKET_WIDTH)));
  }

  loading() {
    this.element.classList.add("is-loading");
  }

  show(data) {
    this.data = data;
    // The window shown, for a reader of the page (and its tests).
    this.element.dataset.since = data.since;
    this.element.dataset.until = data.until;
    this.element.classList.remove("is-loading");
    this.draw();
  }

  fail(error) {
    this.data = null;
    this.element.classList.remove("is-loading");
    replace(this.plot, h("div", { class: "histogram-error" }, `no histogram: ${error.message}`));
    replace(this.note);
  }

  /** Counts records that arrived live, until the next fetch redraws it all. */
  add(records) {
    const data = this.data;
    if (!data) return;
    const since = parseTime(data.since).getTime();
    const stepMs = data.step_ns / 1e6;
    for (const record of records) {
      const index = Math.floor((parseTime(record.ts).getTime() - since) / stepMs);
      if (index < 0) continue;
      const bucket = data.buckets[Math.min(index, data.buckets.length - 1)];
      bucket.counts[record.level] = (bucket.counts[record.level] || 0) + 1;
      data.total += 1;
    }
    if (!this.redraw) {
      this.redraw = requestAnimationFrame(() => {
        this.redraw = 0;
        this.draw();
      });
    }
  }

  draw() {
    const data = this.data;
    if (!data) return;
    const width = this.plot.clientWidth || 800;
    const buckets = data.buckets;
    const top = Math.max(1, ...buckets.map((bucket) => total(bucket.counts)));
    const plotHeight = HEIGHT - AXIS;
    const barWidth = width / buckets.length;
    const chart = svg("svg", { class: "histogram-svg", width, height: HEIGHT, viewBox: `0 0 ${width} ${HEIGHT}`, role: "img" });
    for (let y = 0.5; y <= 1; y += 0.5) {
      chart.append(svg("line", { class: "grid", x1: 0, x2: width, y1: plotHeight - y * plotHeight + 0.5, y2: plotHeight - y * plotHeight + 0.5 }));
    }
    buckets.forEach((bucket, index) => {
      let base = plotHeight;
      for (const level of LEVELS) {
        const n = bucket.counts[level];
        if (!n) continue;
        const barHeight = Math.max(1, (n / top) * (plotHeight - 4));
        base -= barHeight;
        chart.append(svg("rect", { class: `bar bar-${level}`, x: index * barWidth + 0.5, y: base, width: Math.max(1, barWidth - 1.5), height: barHeight }));
      }
    });
    const since = parseTime(data.since).getTime();
    const until = parseTime(data.until).getTime();
    const withDate = spansDays(since, until - 1);
    // Ticks on round times (a multiple of one of `STEPS`), about 150 px apart.
    const interval = STEPS.find((ms) => ms * Math.max(2, Math.floor(width / 150)) >= until - since) ?? until - since;
    for (let t = Math.ceil(since / interval) * interval; t <= until; t += interval) {
      const x = ((t - since) / (until - since)) * width;
      const anchor = x < 40 ? "start" : x > width - 40 ? "end" : "middle";
      const label = svg("text", { class: "axis tick", x: Math.min(width - 2, Math.max(2, x)), y: HEIGHT - 4, "text-anchor": anchor });
      const text = clock(new Date(t).toISOString(), withDate);
      // `12-04 09:08` over days, `09:08` by minutes, `09:08:51` by seconds, `09:08:51.250` within them.
      label.textContent = withDate ? text.slice(5, 16) : interval < 1000 ? text : interval < 60_000 ? text.slice(0, 8) : text.slice(0, 5);
      chart.append(label);
    }
    const topLabel = svg("text", { class: "axis", x: 4, y: 11 });
    topLabel.textContent = count(top);
    chart.append(topLabel);
    const selection = svg("rect", { class: "selection", x: 0, y: 0, width: 0, height: plotHeight, visibility: "hidden" });
    chart.append(selection);
    this.interact(chart, selection, { since, until, width, barWidth, buckets });
    replace(this.plot, chart);

    let shown = data.counted_since
      ? `${count(data.total)} lines counted (only the newest, from ${clock(data.counted_since, true)}: narrow the search to count all)`
      : `${count(data.total)} line${data.total === 1 ? "" : "s"}`;
    if (data.incomplete) shown += ` (${data.incomplete.message})`;
    replace(this.note,
      h("span", { class: "histogram-total" }, shown),
      h("span", { class: "legend" }, LEVELS.map((level) => h("span", { class: "legend-item" }, h("span", { class: `swatch bar-${level}` }), level))),
      h("span", { class: "hint" }, "drag to zoom"));
  }

  interact(chart, selection, { since, until, width, barWidth, buckets }) {
    const timeAt = (x) => since + ((until - since) * Math.max(0, Math.min(width, x))) / width;
    const xOf = (event) => event.clientX - chart.getBoundingClientRect().left;
    let start = null;
    chart.addEventListener("pointerdown", (event) => {
      start = xOf(event);
      chart.setPointerCapture(event.pointerId);
      selection.setAttribute("visibility", "visible");
      selection.setAttribute("x", start);
      selection.setAttribute("width", 0);
    });
    chart.addEventListener("pointermove", (event) => {
      const x = xOf(event);
      if (start != null) {
        selection.setAttribute("x", Math.min(start, x));
        selection.setAttribute("width", Math.abs(x - start));
      }
      const bucket = buckets[Math.floor(x / barWidth)];
      if (!bucket) return;
      this.tip.hidden = false;
      this.tip.style.left = `${Math.min(width - 180, Math.max(0, x + 12))}px`;
      replace(this.tip,
        h("div", { class: "tip-time" }, clock(bucket.start, true)),
        LEVELS.filter((level) => bucket.counts[level]).map((level) =>
          h("div", { class: "tip-row" }, h("span", { class: `swatch bar-${level}` }), level, h("b", null, count(bucket.counts[level])))),
        total(bucket.counts) ? null : h("div", { class: "tip-row" }, "no lines"));
    });
    chart.addEventListener("pointerleave", () => { this.tip.hidden = true; });
    chart.addEventListener("pointerup", (event) => {
      if (start == null) return;
      const end = xOf(event);
      const [from, to] = [Math.min(start, end), Math.max(start, end)];
      start = null;
      selection.setAttribute("visibility", "hidden");
      if (to - from < 4) return; // a click, not a drag
      this.onZoom(new Date(timeAt(from)), new Date(timeAt(to)));
    });
  }
}

function total(counts) {
  return LEVELS.reduce((sum, level) => sum + (counts[level] || 0), 0);
}
