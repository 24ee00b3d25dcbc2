// The explorer: a search box, a time range, newest or oldest first, live
// tail, the volume histogram and the log list, all from one state that the
// URL carries. The logs page is one; a runner's and a request's pages embed
// one with their own fixed filter.

import { h, replace, state as stateView, count } from "./dom.js";
import { get, getBlob, follow } from "./api.js";
import { parseSearch, withQualifier } from "./search.js";
import { LogView } from "./logview.js";
import { Histogram, fitWindow } from "./histogram.js";
import { parseDuration, parseTime } from "./format.js";

export const RANGES = [
  ["5m", "last 5 minutes"], ["15m", "last 15 minutes"], ["1h", "last hour"], ["6h", "last 6 hours"],
  ["24h", "last 24 hours"], ["7d", "last 7 days"], ["30d", "last 30 days"], ["custom", "custom range…"],
];
const FIRST_PAGE = 300;
const NEXT_PAGE = 2000;
/** How often the histogram is redrawn while following. */
const LIVE_HISTOGRAM_EVERY_MS = 5000;

/**
 * What a view shows when its address does not say. The logs page reads
 * newest first, as a live feed of the whole fleet does: what happens now on
 * top. A runner's or a request's page reads oldest first, as its worker
 * printed it (a traceback top to bottom), live while it runs.
 */
export const LOGS_DEFAULTS = { range: "1h", order: "newest", live: false };
export const SUBJECT_DEFAULTS = { range: "7d", order: "oldest", live: true };

/** The explorer's state from a URL's query string. */
export function stateFromUrl(search, defaults = LOGS_DEFAULTS) {
  const query = new URLSearchParams(search);
  const range = query.get("range") || defaults.range;
  const order = query.get("order");
  const known = RANGES.some(([key]) => key === range);
  return {
    q: query.get("q") || "",
    range: known ? range : defaults.range,
    from: query.get("from") || "",
    to: query.get("to") || "",
    order: order === "oldest" || order === "newest" ? order : defaults.order,
    // A custom range has an end: nothing to follow unless asked.
    live: query.has("live") ? query.get("live") === "1" : defaults.live && range !== "custom",
  };
}

/** The explorer's state as a query string (defaults left out). */
export function stateToUrl(state, defaults = LOGS_DEFAULTS) {
  const query = new URLSearchParams();
  if (state.q) query.set("q", state.q);
  if (state.range !== defaults.range) query.set("range", state.range);
  if (state.range === "custom") {
    query.set("from", state.from);
    query.set("to", state.to);
  }
  if (state.order !== defaults.order) query.set("order", state.order);
  if (state.live !== (defaults.live && state.range !== "custom")) query.set("live", state.live ? "1" : "0");
  return query.toString();
}

export class Explorer {
  /**
   * `base`: filters every query carries (`{runner}`, `{request}`, the app
   * picked); `search`: the URL's query string, read over `defaults`;
   * `onState(query)`: the state changed, as a query string; `navigate(path)`:
   * open another page.
   */
  constructor({ base = {}, search = "", defaults = LOGS_DEFAULTS, onState, navigate, placeholder }) {
    this.base = base;
    this.defaults = { ...defaults };
    this.state = stateFromUrl(search, this.defaults);
    this.ended = null;
    this.onState = onState;
    this.navigate = navigate;
    this.view = new LogView({
      onFilter: (name, value) => this.filterBy(name, value),
      onNavigate: (path) => navigate(path),
      onNearEnd: () => this.nextPage(),
      onScroll: () => this.scrolled(),
    });
    this.histogram = new Histogram({ onZoom: (from, to) => this.zoom(from, to) });
    this.build(placeholder);
  }

  build(placeholder) {
    this.search = h("input", {
      type: "search", class: "search", name: "q", value: this.state.q, spellcheck: "false", autocomplete: "off",
      placeholder: placeholder || "search: words, \"a phrase\", /regex/, app: runner: request: level:>=warn source: stream: field.KEY:   ( / )",
      "aria-label": "search",
    });
    this.searchError = h("div", { class: "search-error", role: "alert", hidden: true });
    const form = h("form", { class: "search-form", onsubmit: (event) => { event.preventDefault(); this.update({ q: this.search.value.trim() }); } },
      this.search, h("button", { type: "submit", class: "button primary" }, "Search"));
    this.range = h("select", { class: "range", "aria-label": "time range", onchange: () => this.pickRange(this.range.value) },
      RANGES.map(([key, label]) => h("option", { value: key, selected: key === this.state.range }, label)));
    this.from = h("input", { type: "datetime-local", step: "1", "aria-label": "from" });
    this.to = h("input", { type: "datetime-local", step: "1", "aria-label": "to" });
    this.custom = h("form", { class: "custom-range", hidden: this.state.range !== "custom", onsubmit: (event) => { event.preventDefault(); this.applyCustom(); } },
      this.from, h("span", { class: "dim" }, "to"), this.to, h("button", { type: "submit", class: "button" }, "Apply"));
    this.newest = h("button", { type: "button", class: "seg", title: "newest first: what happens now on top (n)", onclick: () => this.update({ order: "newest" }) }, "Newest first");
    this.oldest = h("button", { type: "button", class: "seg", title: "oldest first: as it was printed, a traceback top to bottom (o)", onclick: () => this.update({ order: "oldest" }) }, "Oldest first");
    this.liveButton = h("button", { type: "button", class: "button live", title: "follow new lines (f)", onclick: () => this.toggleLive() },
      h("span", { class: "live-dot" }), "Live");
    this.endedNote = h("span", { class: "ended-note", hidden: true });
    this.downloadMenu = h("details", { class: "menu" },
      h("summary", { class: "button" }, "Download"),
      h("div", { class: "menu-items" },
        h("button", { type: "button", class: "menu-item", dataset: { format: "text" }, onclick: () => this.download("text") }, "as text (.log)"),
        h("button", { type: "button", class: "menu-item", dataset: { format: "ndjson" }, onclick: () => this.download("ndjson") }, "as NDJSON (.ndjson)")));
    this.status = h("div", { class: "status", role: "status" });
    this.newLines = h("button", { type: "button", class: "new-lines", hidden: true, onclick: () => { this.view.element.scrollTop = 0; } });
    this.overlay = h("div", { class: "overlay", hidden: true });
    this.element = h("div", { class: "explorer" },
      h("div", { class: "toolbar" }, form,
        h("div", { class: "toolbar-group" }, this.range, h("div", { class: "segmented" }, this.newest, this.oldest), this.liveButton, this.endedNote, this.downloadMenu)),
      this.custom, this.searchError, this.histogram.element, this.status,
      h("div", { class: "logs" }, this.view.element, this.newLines, this.overlay));
    this.refreshControls();
  }

  /** Starts loading; call once the element is in the page. */
  start() {
    this.load();
  }

  stop() {
    this.stopped = true;
    this.abort?.abort();
    clearInterval(this.histogramTimer);
  }

  focusSearch() {
    this.search.focus();
    this.search.select();
  }

  toggleLive() {
    if (this.ended) return;
    this.update({ live: !this.state.live, ...(this.state.range === "custom" && !this.state.live ? { range: "15m" } : {}) });
  }

  filterBy(name, value) {
    const q = withQualifier(this.state.q, name, value);
    this.search.value = q;
    this.update({ q });
  }

  pickRange(range) {
    if (range === "custom") {
      const [since, until] = this.window();
      this.from.value = localInput(since);
      this.to.value = localInput(until);
      this.custom.hidden = false;
      this.from.focus();
      return;
    }
    this.custom.hidden = true;
    this.update({ range });
  }

  applyCustom() {
    const from = new Date(this.from.value);
    const to = new Date(this.to.value);
    if (Number.isNaN(from.getTime()) || Number.isNaN(to.getTime()) || from >= to) {
      this.showSearchError("give a start and an end, the end after the start");
      return;
    }
    this.update({ range: "custom", from: from.toISOString(), to: to.toISOString(), live: false });
  }

  zoom(from, to) {
    this.from.value = localInput(from);
    this.to.value = localInput(to);
    this.custom.hidden = false;
    this.update({ range: "custom", from: from.toISOString(), to: to.toISOString(), live: false });
  }

  update(change) {
    this.state = { ...this.state, ...change };
    this.refreshControls();
    this.onState?.(stateToUrl(this.state, this.defaults));
    this.load();
  }

  /**
   * The subject shown has ended (`reason` says how), or goes on again
   * (null): an ended one has no new lines to follow, so Live is turned off
   * and not offered. Lines read live so far are read again from the store,
   * the last ones with them, and the view stays at the end if it was.
   */
  setEnded(reason) {
    if ((reason || null) === this.ended) return;
    this.ended = reason || null;
    this.defaults.live = !this.ended;
    if (this.ended && this.state.live) {
      this.state.live = false;
      this.stickToEnd = this.abort != null && this.state.order === "oldest" && this.view.isAtEnd();
      if (this.abort && !this.stopped) this.load();
    }
    this.refreshControls();
    // A card answering after its page was left must not touch the address.
    if (!this.stopped) this.onState?.(stateToUrl(this.state, this.defaults));
  }

  refreshControls() {
    this.range.value = this.state.range;
    this.custom.hidden = this.state.range !== "custom";
    if (this.state.range === "custom") {
      this.from.value = localInput(new Date(this.state.from));
      this.to.value = localInput(new Date(this.state.to));
    }
    this.newest.setAttribute("aria-pressed", String(this.state.order === "newest"));
    this.oldest.setAttribute("aria-pressed", String(this.state.order === "oldest"));
    this.liveButton.setAttribute("aria-pressed", String(this.state.live));
    this.liveButton.hidden = Boolean(this.ended);
    this.endedNote.hidden = !this.ended;
    replace(this.endedNote, this.ended ? `${this.ended}: no live tail` : "");
    this.element?.classList.toggle("is-live", this.state.live);
  }

  /** The time window `[since, until)` the state means, now. */
  window() {
    if (this.state.range === "custom") {
      const since = new Date(this.state.from);
      const until = new Date(this.state.to);
      if (!Number.isNaN(since.getTime()) && !Number.isNaN(until.getTime())) return [since, until];
    }
    const now = Date.now();
    return [new Date(now - (parseDuration(this.state.range) ?? 3_600_000)), new Date(now)];
  }

  /** The filters of the current state: `{params}` or `{error}`. */
  filters() {
    const parsed = parseSearch(this.state.q);
    if (parsed.error) return parsed;
    const params = { ...parsed.params };
    for (const [name, value] of Object.entries(this.base)) {
      const label = name.replace(/_(not_re|not|re)$/, "");
      const overridden = Object.keys(params).some((given) => given.replace(/_(not_re|not|re)$/, "") === label);
      if (!overridden && value) params[name] = value;
    }
    return { params };
  }

  showSearchError(message) {
    this.searchError.hidden = !message;
    replace(this.searchError, message || "");
  }

  async load() {
    this.abort?.abort();
    clearInterval(this.histogramTimer);
    const abort = (this.abort = new AbortController());
    this.view.clear();
    this.cursor = null;
    this.paging = false;
    this.failed = null;
    // Why lines that match are missing (damaged stored blocks), once told.
    this.incomplete = null;
    this.capped = false;
    this.hasMore = false;
    this.incoming = [];
    this.pendingLive = [];
    this.unseen = 0;
    this.liveStatus = null;
    this.newLines.hidden = true;
    const { params, error } = this.filters();
    this.showSearchError(error);
    if (error) {
      this.showOverlay(stateView("error", "The search cannot be read", error));
      this.histogram.fail({ message: "fix the search first" });
      this.setStatus("");
      return;
    }
    const [since, until] = this.window();
    this.params = { ...params, since: since.toISOString(), ...(this.state.live ? {} : { until: until.toISOString() }) };
    this.showOverlay(stateView("loading", "Loading lines…"));
    this.setStatus("loading…");
    this.loadHistogram(abort.signal);
    if (this.state.live) {
      this.histogramTimer = setInterval(() => this.loadHistogram(abort.signal), LIVE_HISTOGRAM_EVERY_MS);
    }
    this.hasMore = true;
    const page = await this.nextPage(FIRST_PAGE);
    if (!page || abort.signal.aborted) return;
    if (this.stickToEnd) requestAnimationFrame(() => this.view.scrollToEnd());
    this.stickToEnd = false;
    if (this.state.live) this.startLive(page.as_of, abort.signal);
  }

  /**
   * The histogram over the time the matching lines span (within the
   * range; up to now while live), not the whole range: the oldest and the
   * newest match are asked for, one line each.
   */
  async loadHistogram(signal) {
    if (!this.histogram.data) this.histogram.loading();
    try {
      const [first, last] = await Promise.all(["forward", "backward"].map(async (direction) => {
        const page = await get("/v1/logs", { ...this.params, limit: 1, direction }, { signal });
        return page.records[0] ? parseTime(page.records[0].ts).getTime() : null;
      }));
      // The range the lines were asked over; while live, up to now.
      const since = Date.parse(this.params.since);
      const until = this.params.until ? Date.parse(this.params.until) : Date.now();
      const fitted = fitWindow({ since, until, first, last, live: this.state.live, buckets: this.histogram.buckets() });
      const params = { ...this.params, since: new Date(fitted.since).toISOString(), until: new Date(fitted.until).toISOString(), buckets: fitted.buckets };
      const data = await get("/v1/histogram", params, { signal });
      if (!signal.aborted) this.histogram.show(data);
    } catch (error) {
      if (!signal.aborted && error.name !== "AbortError") this.histogram.fail(error);
    }
  }

  /** Loads the next page in the current order; returns it. */
  async nextPage(limit = NEXT_PAGE) {
    if (!this.hasMore || this.paging) return null;
    const signal = this.abort.signal;
    this.paging = true;
    this.setStatus();
    try {
      const page = await get("/v1/logs", {
        ...this.params,
        limit,
        direction: this.state.order === "newest" ? "backward" : "forward",
        cursor: this.cursor,
      }, { signal });
      if (signal.aborted) return null;
      this.cursor = page.next_cursor;
      this.hasMore = Boolean(page.next_cursor);
      if (page.incomplete) this.incomplete = page.incomplete.message;
      const kept = this.view.append(page.records);
      if (!kept) {
        this.hasMore = false;
        this.capped = true;
      }
      if (!this.hasMore && this.pendingLive.length) {
        this.view.append(this.pendingLive.splice(0));
      }
      this.showEmptyIfEmpty();
      return page;
    } catch (error) {
      if (signal.aborted || error.name === "AbortError") return null;
      this.hasMore = false;
      this.failed = error.message;
      // Lines already shown stay; the status line says why no more came.
      if (!this.view.length) this.showOverlay(stateView("error", "The lines could not be loaded", error.message));
      return null;
    } finally {
      // A newer load has its own paging; only this load's state is ours.
      if (signal === this.abort.signal) {
        this.paging = false;
        this.setStatus();
      }
    }
  }

  startLive(asOf, signal) {
    const params = { ...this.params };
    delete params.until;
    follow("/v1/logs/tail", params, {
      after: asOf,
      signal,
      onRecord: (record) => {
        this.incoming.push(record);
        if (!this.flushScheduled) {
          this.flushScheduled = true;
          requestAnimationFrame(() => this.flushLive());
        }
      },
      onStatus: (status, error) => {
        this.liveStatus = status === "error" ? `live tail stopped: ${error.message}` : status;
        this.setStatus();
      },
    });
  }

  flushLive() {
    this.flushScheduled = false;
    const records = this.incoming.splice(0);
    if (!records.length || this.abort.signal.aborted) return;
    this.histogram.add(records);
    if (this.state.order === "newest") {
      const atTop = this.view.element.scrollTop <= 1;
      this.view.prepend(records.reverse());
      if (!atTop) {
        this.unseen += records.length;
        this.newLines.hidden = false;
        replace(this.newLines, `↑ ${count(this.unseen)} new line${this.unseen === 1 ? "" : "s"}`);
      }
    } else if (this.hasMore) {
      this.pendingLive.push(...records);
    } else {
      const atEnd = this.view.isAtEnd();
      this.view.append(records);
      if (atEnd) requestAnimationFrame(() => this.view.scrollToEnd());
    }
    this.showEmptyIfEmpty();
    this.setStatus();
  }

  scrolled() {
    if (this.unseen && this.view.element.scrollTop <= 1) {
      this.unseen = 0;
      this.newLines.hidden = true;
    }
  }

  showEmptyIfEmpty() {
    if (this.view.length) {
      this.showOverlay(null);
    } else if (this.state.live) {
      this.showOverlay(stateView("empty", "Waiting for new lines…", "Nothing matched yet in this range; new lines appear here as they are stored."));
    } else {
      this.showOverlay(stateView("empty", "No lines match", "Widen the time range, loosen the search, or turn on Live (f) to wait for new lines."));
    }
  }

  showOverlay(content) {
    this.overlay.hidden = !content;
    replace(this.overlay, content);
  }

  setStatus(text) {
    if (text != null) {
      replace(this.status, text);
      return;
    }
    if (this.failed && !this.view.length) {
      replace(this.status);
      return;
    }
    const parts = [h("span", { class: "status-count" }, `${count(this.view.length)} line${this.view.length === 1 ? "" : "s"}`)];
    const day = this.view.day();
    if (day) parts.push(" · ", h("span", { class: "status-day", title: "every line shown is of this day: the times alone are shown" }, day));
    parts.push(this.state.order === "newest" ? " · newest first" : " · oldest first");
    if (this.paging) parts.push(" · loading more…");
    else if (this.hasMore) parts.push(" · scroll for more");
    else if (this.failed) parts.push(h("span", { class: "status-error" }, ` · could not load more: ${this.failed}`));
    else if (this.capped) parts.push(" · the view keeps 200,000 lines: narrow the search to see the rest");
    else if (this.view.length) parts.push(" · all loaded");
    if (this.incomplete) parts.push(h("span", { class: "status-error" }, ` · ${this.incomplete}`));
    if (this.state.live) {
      const live = this.liveStatus === "live" ? "live" : this.liveStatus === "reconnecting" ? "reconnecting…" : this.liveStatus || "connecting…";
      parts.push(" · ", h("span", { class: `status-live ${this.liveStatus === "live" ? "on" : ""}` }, live));
    }
    replace(this.status, parts);
  }

  /**
   * Downloads every line of the current search and range, in the current
   * order, through `GET /v1/export`: the same text as `tailwater export`,
   * streamed by the server whatever its size.
   */
  async download(format) {
    this.downloadMenu.open = false;
    if (!this.params) return;
    this.setStatus("preparing the download…");
    let blob;
    try {
      blob = await getBlob("/v1/export", {
        ...this.params,
        format,
        // Text as `tailwater export` writes it: times to the millisecond.
        ...(format === "text" ? { time_precision: "ms" } : {}),
        direction: this.state.order === "newest" ? "backward" : "forward",
      }, { signal: this.abort.signal });
    } catch (error) {
      if (error.name !== "AbortError") this.setStatus(`the download failed: ${error.message}`);
      return;
    }
    const link = h("a", { href: URL.createObjectURL(blob), download: `tailwater-${stamp()}.${format === "ndjson" ? "ndjson" : "log"}` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
    this.setStatus();
  }
}

function pad(n) {
  return String(n).padStart(2, "0");
}

/** A Date as a datetime-local input's value (local time). */
function localInput(date) {
  if (!date || Number.isNaN(date.getTime())) return "";
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

function stamp() {
  const now = new Date();
  return `${now.getFullYear()}${pad(now.getMonth() + 1)}${pad(now.getDate())}-${pad(now.getHours())}${pad(now.getMinutes())}${pad(now.getSeconds())}`;
}
