// Runners: the table of a tenant's runners (state, version, start, last
// seen, exit reason) and one runner's page (its lifecycle timeline and its
// logs), from `/v1/runners`.

import { h, replace, state as stateView, count } from "./dom.js";
import { get } from "./api.js";
import { clock, ago, duration, parseTime, runnerPath, spansDays } from "./format.js";
import { SubjectPage } from "./subject.js";

export const STATES = ["initializing", "ready", "running", "exited", "crashed", "oom-killed", "lost"];
/** How a runner in each state that is over has ended. */
const ENDED = { exited: "this runner has exited", crashed: "this runner crashed", "oom-killed": "this runner was OOM-killed", lost: "this runner is gone (lost)" };
const REFRESH_MS = 5000;

const SIGNALS = { 1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 6: "SIGABRT", 7: "SIGBUS", 9: "SIGKILL", 11: "SIGSEGV", 13: "SIGPIPE", 15: "SIGTERM" };

/** Why a runner ended: `exit 0`, `exit 1`, `SIGKILL`, `OOM-killed`. */
export function exitReason(exit) {
  if (!exit) return "—";
  if (exit.oom_killed) return "OOM-killed";
  const parts = [];
  if (exit.signal != null) parts.push(SIGNALS[exit.signal] || `signal ${exit.signal}`);
  else if (exit.code != null) parts.push(`exit ${exit.code}`);
  if (exit.core_dumped) parts.push("core dumped");
  return parts.join(", ") || "—";
}

export function stateBadge(state) {
  return h("span", { class: `badge state-${state || "unknown"}` }, state || "unknown");
}

/** The runners table. */
export class RunnersPage {
  constructor({ app, state, navigate, onState }) {
    this.app = app;
    this.filterState = state || "";
    this.navigate = navigate;
    this.onState = onState;
    this.stateSelect = h("select", { "aria-label": "state", onchange: () => { this.filterState = this.stateSelect.value; this.onState?.({ state: this.filterState }); this.load(); } },
      h("option", { value: "" }, "all states"),
      STATES.map((s) => h("option", { value: s, selected: s === this.filterState }, s)));
    this.body = h("div", { class: "table-wrap" }, stateView("loading", "Loading runners…"));
    this.summary = h("span", { class: "dim" });
    this.element = h("div", { class: "page runners-page" },
      h("div", { class: "page-head" }, h("h1", null, "Runners"), this.summary, h("div", { class: "spacer" }), this.stateSelect),
      this.body);
  }

  start() {
    this.load();
    this.timer = setInterval(() => this.load(true), REFRESH_MS);
  }

  stop() {
    clearInterval(this.timer);
    this.abort?.abort();
  }

  async load(quiet = false) {
    this.abort?.abort();
    const abort = (this.abort = new AbortController());
    if (!quiet) replace(this.body, stateView("loading", "Loading runners…"));
    let runners;
    try {
      ({ runners } = await get("/v1/runners", { app: this.app, state: this.filterState }, { signal: abort.signal }));
    } catch (error) {
      if (error.name === "AbortError") return;
      replace(this.body, stateView("error", "The runners could not be loaded", error.message));
      return;
    }
    replace(this.summary, `${count(runners.length)} runner${runners.length === 1 ? "" : "s"}`);
    if (!runners.length) {
      replace(this.body, stateView("empty", "No runners yet", this.filterState || this.app
        ? "None match this app and state: pick another."
        : "A runner appears here when its agent (tailwater run) sends its first line."));
      return;
    }
    runners.sort((a, b) => String(b.last_seen || b.started).localeCompare(String(a.last_seen || a.started)));
    const row = (runner) => {
      const path = runnerPath(runner);
      return h("tr", { class: "clickable", dataset: { runner: runner.runner }, onclick: () => this.navigate(path) },
      h("td", null, h("a", { href: path, class: "mono", onclick: (event) => { event.preventDefault(); } }, runner.runner)),
      h("td", null, stateBadge(runner.state)),
      h("td", null, runner.app),
      h("td", { class: "mono" }, runner.version || "—"),
      h("td", { title: runner.started || "" }, runner.started ? clock(runner.started, true) : "—"),
      h("td", { title: runner.last_seen || "" }, ago(runner.last_seen)),
      h("td", null, exitReason(runner.exit)),
      h("td", { class: "num" }, count(runner.requests?.served ?? 0)),
      h("td", { class: "num" }, count(runner.requests?.in_flight ?? 0)));
    };
    replace(this.body, h("table", { class: "table" },
      h("thead", null, h("tr", null, ["runner", "state", "app", "version", "started", "last seen", "exit", "served", "in flight"].map((name) => h("th", null, name)))),
      h("tbody", null, runners.map(row))));
  }
}

/** One runner: its card, lifecycle timeline and logs. */
export class RunnerPage extends SubjectPage {
  constructor({ runner, app, search, navigate, onState }) {
    const timeline = h("ol", { class: "timeline" });
    super({
      kind: "runner", title: runner, base: { runner, app },
      head: h("a", { href: "/runners", class: "back", onclick: (e) => { e.preventDefault(); navigate("/runners"); } }, "← Runners"),
      aside: h("section", { class: "card timeline-card" }, h("h2", null, "Lifecycle"), timeline),
      refreshMs: REFRESH_MS, search, navigate, onState,
    });
    this.timeline = timeline;
    this.runner = runner;
    this.app = app;
  }

  async refresh() {
    let runner;
    try {
      runner = await get(`/v1/runners/${encodeURIComponent(this.runner)}`, { app: this.app });
    } catch (error) {
      replace(this.card, stateView("error", "The runner could not be loaded", error.message));
      replace(this.timeline, h("li", { class: "dim" }, "—"));
      this.done();
      return;
    }
    // An ended runner waiting out its restart backoff starts again: keep
    // refreshing until it ends with no restart pending. A lost one may be
    // heard from again: its card keeps refreshing, and Live comes back.
    const restarting = runner.events?.at(-1)?.fields?.event === "restart";
    const ended = restarting ? null : ENDED[runner.state] || null;
    this.explorer.setEnded(ended);
    if (ended && runner.state !== "lost") this.done();
    const startup = runner.ready_at && runner.started ? parseTime(runner.ready_at) - parseTime(runner.started) : null;
    const facts = [
      ["state", stateBadge(runner.state)],
      ["app", runner.app],
      ["version", runner.version || "—"],
      ["boot", h("span", { class: "mono" }, runner.boot || "—")],
      ["source", runner.source || "—"],
      ["started", runner.started ? clock(runner.started, true) : "—"],
      ["ready after", startup != null ? duration(startup) : "not ready"],
      ["last seen", ago(runner.last_seen)],
      ["exited", runner.exited_at ? clock(runner.exited_at, true) : "—"],
      ["exit", exitReason(runner.exit)],
      ["requests", `${count(runner.requests?.served ?? 0)} served · ${count(runner.requests?.failed ?? 0)} failed · ${count(runner.requests?.in_flight ?? 0)} in flight`],
    ];
    replace(this.card, h("dl", { class: "facts" }, facts.map(([name, value]) => [h("dt", null, name), h("dd", null, value)])));
    const events = runner.events || [];
    const withDate = events.length > 0 && spansDays(parseTime(events[0].ts), parseTime(events.at(-1).ts));
    replace(this.timeline, events.length
      ? events.map((event) => {
        const kind = event.fields?.event || event.level;
        return h("li", { class: `event event-${kind} level-${event.level}` },
          h("span", { class: "event-time", title: event.ts }, clock(event.ts, withDate)),
          h("span", { class: "event-name" }, String(kind).replace(/_/g, " ")),
          h("span", { class: "event-message" }, event.message));
      })
      : h("li", { class: "dim" }, "no lifecycle events yet"));
  }
}
