// The log list: virtualised, so only the rows in sight (and a few around
// them) exist in the DOM whatever the number of lines; rows have one fixed
// height, and an expanded row (full message, fields, labels) adds its
// measured height. Records get a position when they arrive, so lines
// prepended by live tail shift nothing that is already laid out.

import { h } from "./dom.js";
import { renderAnsi, stripAnsi } from "./ansi.js";
import { clock, requestPath, runnerPath } from "./format.js";

/** Height of one collapsed row, in pixels: matches `.row` in style.css. */
export const ROW_HEIGHT = 22;
/** Rows rendered beyond the visible ones, above and below. */
const OVERSCAN = 30;
/** Lines a view keeps at most; older ones give way (and the view says so). */
export const MAX_LINES = 200_000;
/** Rows from the end at which the next page is asked for. */
const NEAR_END_ROWS = 150;

export class LogView {
  constructor({ onFilter, onNavigate, onNearEnd, onScroll }) {
    this.onFilter = onFilter;
    this.onNavigate = onNavigate;
    this.onNearEnd = onNearEnd;
    this.onScroll = onScroll;
    this.records = [];
    this.firstPos = 0; // the position of records[0]
    this.nextPos = 0;
    this.expanded = new Map(); // record id -> { pos, extra }
    this.rows = new Map(); // record id -> row element
    this.withDate = false;
    this.spacer = h("div", { class: "logview-spacer" });
    this.element = h("div", { class: "logview", tabindex: "0", role: "log", "aria-label": "log lines" }, this.spacer);
    this.element.addEventListener("scroll", () => this.schedule(), { passive: true });
    this.element.addEventListener("click", (event) => this.click(event));
    new ResizeObserver(() => this.schedule()).observe(this.element);
  }

  get length() {
    return this.records.length;
  }

  clear() {
    this.records = [];
    this.firstPos = this.nextPos = 0;
    this.expanded.clear();
    for (const row of this.rows.values()) row.remove();
    this.rows.clear();
    this.element.scrollTop = 0;
    this.layout();
  }

  /** Adds records after the last one. */
  append(records) {
    const room = Math.max(0, MAX_LINES - this.records.length);
    for (const record of records.slice(0, room)) {
      record._pos = this.nextPos++;
      this.records.push(record);
    }
    this.layout();
    return records.length <= room;
  }

  /** Adds records before the first one (`records` in display order), keeping what is in sight in place. */
  prepend(records) {
    if (!records.length) return;
    const atTop = this.element.scrollTop <= 1;
    for (let i = records.length - 1; i >= 0; i--) records[i]._pos = --this.firstPos;
    this.records = records.concat(this.records);
    if (this.records.length > MAX_LINES) {
      for (const dropped of this.records.splice(MAX_LINES)) this.expanded.delete(dropped.id);
      this.nextPos = this.firstPos + this.records.length;
    }
    const added = records.length * ROW_HEIGHT;
    this.layout();
    if (!atTop) this.element.scrollTop += added;
  }

  scrollToEnd() {
    this.element.scrollTop = this.element.scrollHeight;
  }

  isAtEnd() {
    const el = this.element;
    return el.scrollHeight - el.scrollTop - el.clientHeight < ROW_HEIGHT * 2;
  }

  /** Extra heights of expanded rows above index `index`. */
  offsetOf(index) {
    let offset = index * ROW_HEIGHT;
    const pos = this.firstPos + index;
    for (const { pos: expandedPos, extra } of this.expanded.values()) {
      if (expandedPos < pos) offset += extra;
    }
    return offset;
  }

  totalHeight() {
    let height = this.records.length * ROW_HEIGHT;
    for (const { extra } of this.expanded.values()) height += extra;
    return height;
  }

  /** The index of the row at `y` pixels from the top. */
  indexAt(y) {
    let low = 0;
    let high = this.records.length - 1;
    if (!this.expanded.size) return Math.max(0, Math.min(high, Math.floor(y / ROW_HEIGHT)));
    while (low < high) {
      const middle = (low + high + 1) >> 1;
      if (this.offsetOf(middle) <= y) low = middle;
      else high = middle - 1;
    }
    return Math.max(0, low);
  }

  layout() {
    this.spacer.style.height = `${this.totalHeight()}px`;
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
    let remeasure = false;
    for (let index = first; index <= last; index++) {
      const record = this.records[index];
      let row = this.rows.get(record.id);
      if (!row) {
        row = this.row(record);
        this.rows.set(record.id, row);
        this.element.append(row);
      }
      row.style.transform = `translateY(${this.offsetOf(index)}px)`;
      const expanded = this.expanded.get(record.id);
      if (expanded) {
        const extra = row.offsetHeight - ROW_HEIGHT;
        if (extra !== expanded.extra) {
          expanded.extra = extra;
          remeasure = true;
        }
      }
    }
    if (remeasure) this.layout();
    this.onScroll?.();
    if (count && last >= count - NEAR_END_ROWS) this.onNearEnd?.();
  }

  row(record) {
    const firstLine = record.message.split("\n", 1)[0];
    const fieldCount = Object.keys(record.fields || {}).length;
    const row = h("div", { class: `row level-${record.level} stream-${record.stream}`, dataset: { id: record.id } },
      h("div", { class: "line" },
        h("span", { class: "ts", title: record.ts }, clock(record.ts, this.withDate)),
        h("span", { class: `lvl lvl-${record.level}` }, record.level),
        h("button", { class: "chip runner", type: "button", title: `show only runner ${record.runner}`, dataset: { filter: "runner", value: record.runner } }, record.runner),
        record.request_id
          ? h("button", { class: "chip request", type: "button", title: `show only request ${record.request_id}`, dataset: { filter: "request", value: record.request_id } }, record.request_id)
          : h("span", { class: "chip none" }),
        h("span", { class: "msg" },
          record.stream === "system" ? h("span", { class: "sys" }, "tailwater ") : null,
          record.stream === "stderr" ? h("span", { class: "err-mark", title: "stderr" }, "▍") : null,
          renderAnsi(firstLine),
          record.message.length > firstLine.length ? h("span", { class: "more" }, " …") : null,
          fieldCount ? h("span", { class: "fields-hint" }, ` {${fieldCount}}`) : null)));
    if (this.expanded.has(record.id)) row.append(this.detail(record));
    return row;
  }

  detail(record) {
    const labels = [["app", record.app], ["version", record.version], ["runner", record.runner], ["boot", record.boot],
      ["source", record.source], ["stream", record.stream], ["seq", record.seq], ["id", record.id]];
    const detail = h("div", { class: "detail" },
      h("pre", { class: "detail-message" }, renderAnsi(record.message)),
      Object.keys(record.fields || {}).length ? h("div", { class: "json" }, jsonTree(record.fields, true)) : null,
      h("div", { class: "detail-labels" },
        h("span", { class: "detail-ts" }, record.ts),
        labels.filter(([, value]) => value !== "" && value != null).map(([name, value]) =>
          h("span", { class: "label" }, h("span", { class: "label-name" }, name), String(value))),
        record.invalid_utf8 ? h("span", { class: "label warn" }, "invalid utf-8 replaced") : null),
      h("div", { class: "detail-actions" },
        h("a", { href: runnerPath(record), dataset: { nav: "1" } }, "runner page →"),
        record.request_id ? h("a", { href: requestPath(record.request_id), dataset: { nav: "1" } }, "request page →") : null,
        h("button", { type: "button", class: "link copy", dataset: { copy: "1" } }, "copy line")));
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
    if (!row) return;
    const record = this.records.find((r) => String(r.id) === row.dataset.id);
    if (!record) return;
    if (target.closest("[data-copy]")) {
      navigator.clipboard?.writeText(stripAnsi(record.message)).catch(() => {});
      return;
    }
    if (target.closest(".detail")) return;
    if (!window.getSelection()?.isCollapsed) return; // selecting text, not toggling
    if (this.expanded.has(record.id)) {
      this.expanded.delete(record.id);
      row.querySelector(".detail")?.remove();
    } else {
      this.expanded.set(record.id, { pos: record._pos, extra: 0 });
      row.append(this.detail(record));
    }
    row.classList.toggle("expanded", this.expanded.has(record.id));
    // Laid out now, not at the next frame: the lines below make room as the
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


