// The log list: virtualised, so only the rows in sight (and a few around
// them) exist in the DOM whatever the number of lines. A one-line record is
// one fixed-height row; a record of several lines (a traceback) shows them
// all, and an opened row adds its fields and labels: such rows are measured
// once drawn, and the rows below move by what they add. Records get a
// position when they arrive, so lines prepended by live tail shift nothing
// that is already laid out.

import { h, copyButton } from "./dom.js";
import { renderAnsi, stripAnsi } from "./ansi.js";
import { clock, localDay, parseTime, requestPath, runnerPath, spansDays } from "./format.js";

/** Height of one collapsed row, in pixels: matches `.row` in style.css. */
export const ROW_HEIGHT = 22;
/** Height of each further line of a record of several lines: `.row.multiline .msg`. */
const LINE_HEIGHT = 18;
/** Rows rendered beyond the visible ones, above and below. */
const OVERSCAN = 30;
/** Lines a view keeps at most; older ones give way (and the view says so). */
export const MAX_LINES = 200_000;
/** Rows from the end at which the next page is asked for. */
const NEAR_END_ROWS = 150;
/**
 * The runner and request columns fit the longest id shown, in characters,
 * within these bounds: a UUID request id (36) shows whole; a longer one is
 * cut, and whole in its title and its opened row.
 */
const COLUMN_CHARS = { runner: [6, 32], request: [4, 40] };

export class LogView {
  constructor({ onFilter, onNavigate, onNearEnd, onScroll }) {
    this.onFilter = onFilter;
    this.onNavigate = onNavigate;
    this.onNearEnd = onNearEnd;
    this.onScroll = onScroll;
    this.rows = new Map(); // record id -> row element
    this.spacer = h("div", { class: "logview-spacer" });
    this.element = h("div", { class: "logview", tabindex: "0", role: "log", "aria-label": "log lines" }, this.spacer);
    this.element.addEventListener("scroll", () => this.schedule(), { passive: true });
    this.element.addEventListener("click", (event) => this.click(event));
    new ResizeObserver(() => this.schedule()).observe(this.element);
    this.reset();
  }

  reset() {
    this.records = [];
    this.firstPos = 0; // the position of records[0]
    this.nextPos = 0;
    this.offsets = null; // offsets[i]: the top of records[i]; built when needed
    this.withDate = false;
    this.first = Infinity; // the oldest and newest times shown, in ms
    this.last = -Infinity;
    this.chars = { runner: 0, request: 0 };
  }

  get length() {
    return this.records.length;
  }

  clear() {
    this.reset();
    for (const row of this.rows.values()) row.remove();
    this.rows.clear();
    this.element.scrollTop = 0;
    this.fitColumns();
    this.layout();
  }

  /** Adds records after the last one. */
  append(records) {
    const room = Math.max(0, MAX_LINES - this.records.length);
    const kept = records.slice(0, room);
    for (const record of kept) {
      record._pos = this.nextPos++;
      this.records.push(record);
    }
    this.took(kept);
    return records.length <= room;
  }

  /** Adds records before the first one (`records` in display order), keeping what is in sight in place. */
  prepend(records) {
    if (!records.length) return;
    const atTop = this.element.scrollTop <= 1;
    for (let i = records.length - 1; i >= 0; i--) records[i]._pos = --this.firstPos;
    this.records = records.concat(this.records);
    if (this.records.length > MAX_LINES) {
      this.records.splice(MAX_LINES);
      this.nextPos = this.firstPos + this.records.length;
    }
    this.took(records);
    const added = records.reduce((sum, record) => sum + ROW_HEIGHT + record._extra, 0);
    if (!atTop) this.element.scrollTop += added;
  }

  /**
   * Notes what new records change: their heights until measured (a line
   * more per line of the message), the days shown, the id columns' widths.
   */
  took(records) {
    for (const record of records) {
      const lines = record.message.replace(/\n+$/, "").split("\n").length;
      record._lines = lines;
      record._extra = lines > 1 ? (lines - 1) * LINE_HEIGHT : 0;
      const ms = parseTime(record.ts).getTime();
      this.first = Math.min(this.first, ms);
      this.last = Math.max(this.last, ms);
      this.chars.runner = Math.max(this.chars.runner, record.runner.length);
      this.chars.request = Math.max(this.chars.request, record.request_id?.length ?? 0);
    }
    const withDate = this.records.length > 0 && spansDays(this.first, this.last);
    if (withDate !== this.withDate) {
      // Every row drawn anew, with or without its date.
      this.withDate = withDate;
      for (const row of this.rows.values()) row.remove();
      this.rows.clear();
    }
    this.fitColumns();
    this.layout();
  }

  /** The one local day of every line shown, when they share one (times alone are shown then). */
  day() {
    return this.records.length && !this.withDate ? localDay(new Date(this.first)) : null;
  }

  fitColumns() {
    for (const [name, [least, most]] of Object.entries(COLUMN_CHARS)) {
      // A character more than the longest: no rounding cuts its last one.
      const chars = Math.max(least, Math.min(most, this.chars[name])) + 1;
      this.element.style.setProperty(`--${name}-chars`, `${chars}ch`);
    }
  }

  scrollToEnd() {
    this.element.scrollTop = this.element.scrollHeight;
  }

  isAtEnd() {
    const el = this.element;
    return el.scrollHeight - el.scrollTop - el.clientHeight < ROW_HEIGHT * 2;
  }

  /** The tops of the rows, and the end of the last: built again after a change. */
  tops() {
    if (!this.offsets) {
      const offsets = new Float64Array(this.records.length + 1);
      for (let i = 0; i < this.records.length; i++) offsets[i + 1] = offsets[i] + ROW_HEIGHT + (this.records[i]._extra || 0);
      this.offsets = offsets;
    }
    return this.offsets;
  }

  /** The index of the row at `y` pixels from the top. */
  indexAt(y) {
    const offsets = this.tops();
    let low = 0;
    let high = this.records.length - 1;
    while (low < high) {
      const middle = (low + high + 1) >> 1;
      if (offsets[middle] <= y) low = middle;
      else high = middle - 1;
    }
    return Math.max(0, low);
  }

  layout() {
    this.offsets = null;
    this.spacer.style.height = `${this.tops()[this.records.length]}px`;
    this.schedule();
  }

  schedule() {
    if (this.pending) return;
    this.pending = requestAnimationFrame(() => {
      this.pending = 0;
      this.render();
    });
  }

  render() {
    const count = this.records.length;
    const top = this.element.scrollTop;
    const height = this.element.clientHeight || 600;
    const first = count ? Math.max(0, this.indexAt(top) - OVERSCAN) : 0;
    const last = count ? Math.min(count - 1, this.indexAt(top + height) + OVERSCAN) : -1;
    const wanted = new Set();
    for (let index = first; index <= last; index++) wanted.add(this.records[index].id);
    for (const [id, row] of this.rows) {
      if (!wanted.has(id)) {
        row.remove();
        this.rows.delete(id);
      }
    }
    const place = () => {
      const offsets = this.tops();
      for (let index = first; index <= last; index++) {
        this.rows.get(this.records[index].id).style.transform = `translateY(${offsets[index]}px)`;
      }
    };
    for (let index = first; index <= last; index++) {
      const record = this.records[index];
      if (!this.rows.has(record.id)) {
        const row = this.row(record);
        this.rows.set(record.id, row);
        this.element.append(row);
      }
    }
    place();
    // Rows taller than one line, measured now that they are drawn; rows
    // above the top of the view keep what is in sight in place.
    let moved = 0;
    let changed = false;
    const offsets = this.tops();
    for (let index = first; index <= last; index++) {
      const record = this.records[index];
      if (record._lines < 2 && !record._open) continue;
      const extra = this.rows.get(record.id).offsetHeight - ROW_HEIGHT;
      if (extra === record._extra) continue;
      if (offsets[index] < top) moved += extra - record._extra;
      record._extra = extra;
      changed = true;
    }
    if (changed) {
      this.offsets = null;
      this.spacer.style.height = `${this.tops()[count]}px`;
      place();
      if (moved) this.element.scrollTop = top + moved;
      this.schedule();
    }
    this.onScroll?.();
    if (count && last >= count - NEAR_END_ROWS) this.onNearEnd?.();
  }

  row(record) {
    const fieldCount = Object.keys(record.fields || {}).length;
    const multiline = record._lines > 1;
    const request = record.request_id;
    const row = h("div", { class: `row level-${record.level} stream-${record.stream}${multiline ? " multiline" : ""}${record._open ? " expanded" : ""}`, dataset: { id: record.id } },
      h("div", { class: "line" },
        h("span", { class: "ts", title: record.ts }, clock(record.ts, this.withDate)),
        h("span", { class: `lvl lvl-${record.level}` }, record.level),
        h("button", { class: `chip stream stream-${record.stream}`, type: "button", title: `${record.stream}: show only this stream`, dataset: { filter: "stream", value: record.stream } }, record.stream),
        h("button", { class: "chip runner", type: "button", title: `runner ${record.runner}: show only its lines`, dataset: { filter: "runner", value: record.runner } }, record.runner),
        request
          ? h("button", { class: "chip request", type: "button", title: `request ${request}: show only its lines`, dataset: { filter: "request", value: request } }, request)
          : h("span", { class: "chip no-request" }),
        h("span", { class: "msg" },
          renderAnsi(record.message),
          fieldCount ? h("span", { class: "fields-hint" }, ` {${fieldCount}}`) : null)));
    if (record._open) row.append(this.detail(record));
    return row;
  }

  detail(record) {
    const labels = [["app", record.app], ["version", record.version], ["runner", record.runner], ["boot", record.boot],
      ["source", record.source], ["stream", record.stream], ["seq", record.seq], ["id", record.id]];
    const request = record.request_id;
    const detail = h("div", { class: "detail" },
      // A message of several lines is already whole in its row.
      record._lines > 1 ? null : h("pre", { class: "detail-message" }, renderAnsi(record.message)),
      Object.keys(record.fields || {}).length ? h("div", { class: "json" }, jsonTree(record.fields, true)) : null,
      h("div", { class: "detail-labels" },
        h("span", { class: "detail-ts" }, record.ts),
        request ? h("span", { class: "label request-label" }, h("span", { class: "label-name" }, "request"), h("span", { class: "request-id" }, request)) : null,
        labels.filter(([, value]) => value !== "" && value != null).map(([name, value]) =>
          h("span", { class: "label" }, h("span", { class: "label-name" }, name), String(value))),
        record.invalid_utf8 ? h("span", { class: "label warn" }, "invalid utf-8 replaced") : null),
      h("div", { class: "detail-actions" },
        h("a", { href: runnerPath(record), dataset: { nav: "1" } }, "runner page →"),
        request ? h("a", { href: requestPath(request), dataset: { nav: "1" } }, "request page →") : null,
        request ? copyButton("copy request id", () => request, `copy ${request}`) : null,
        copyButton("copy line", () => stripAnsi(record.message))));
    detail.addEventListener("toggle", () => this.schedule(), true);
    return detail;
  }

  click(event) {
    const target = event.target;
    const filter = target.closest("[data-filter]");
    if (filter) {
      event.stopPropagation();
      this.onFilter(filter.dataset.filter, filter.dataset.value);
      return;
    }
    const link = target.closest("a[data-nav]");
    if (link) {
      event.preventDefault();
      this.onNavigate(link.getAttribute("href"));
      return;
    }
    const row = target.closest(".row");
    if (!row || target.closest(".detail")) return;
    const record = this.records.find((r) => String(r.id) === row.dataset.id);
    if (!record) return;
    if (!window.getSelection()?.isCollapsed) return; // selecting text, not toggling
    record._open = !record._open;
    if (record._open) {
      row.append(this.detail(record));
    } else {
      row.querySelector(".detail")?.remove();
    }
    row.classList.toggle("expanded", record._open);
    if (!record._open && record._lines < 2) record._extra = 0;
    // Measured now, not at the next frame: the lines below make room as the
    // detail opens (or close up as it shuts), never drawn under it.
    this.layout();
    this.render();
  }
}

/** A JSON value as a tree: objects and arrays fold. */
export function jsonTree(value, open = false) {
  if (value === null || typeof value !== "object") {
    const type = value === null ? "null" : typeof value;
    return h("span", { class: `json-${type}` }, type === "string" ? JSON.stringify(value) : String(value));
  }
  const entries = Array.isArray(value) ? value.map((item, index) => [index, item]) : Object.entries(value);
  const [openMark, closeMark] = Array.isArray(value) ? ["[", "]"] : ["{", "}"];
  return h("details", { class: "json-node", open },
    h("summary", null, `${openMark} ${entries.length} ${Array.isArray(value) ? "items" : "fields"} ${closeMark}`),
    h("div", { class: "json-entries" },
      entries.map(([key, item]) => h("div", { class: "json-entry" },
        h("span", { class: "json-key" }, Array.isArray(value) ? `${key}` : key), ": ", jsonTree(item)))));
}
