// One request's page: its status, state, timing, runner and error from
// `/v1/requests/{id}`, and its logs, live while it runs.

import { h, replace, state as stateView, count } from "./dom.js";
import { get } from "./api.js";
import { clock, duration, runnerPath } from "./format.js";
import { SubjectPage } from "./subject.js";

const REFRESH_MS = 2000;
/** Requests that ended one way or another (every state but `in_flight`). */
const ENDED = { completed: "this request has ended", error: "this request failed", unfinished: "this request was cut short" };

/**
 * The HTTP status, in the colour of how the request went: a failed or
 * unfinished request is never green, whatever status it gave; one with no
 * status says why it has none.
 */
function statusBadge(request) {
  const failed = request.state === "error" || request.state === "unfinished";
  if (request.status == null) {
    return request.state === "in_flight"
      ? h("span", { class: "badge state-in_flight" }, "no status yet")
      : h("span", { class: `badge ${failed ? "status-error" : "status-none"}`, title: "the worker gave no HTTP status" }, "none");
  }
  const kind = failed || request.status >= 500 ? "error" : request.status >= 400 ? "warn" : "ok";
  return h("span", { class: `badge status-${kind}` }, String(request.status));
}

export class RequestPage extends SubjectPage {
  constructor({ id, search, navigate, onState }) {
    super({
      kind: "request", title: id, head: h("span", { class: "dim" }, "Request"), base: { request: id },
      refreshMs: REFRESH_MS, search, navigate, onState,
    });
    this.id = id;
  }

  async refresh() {
    let request;
    try {
      request = await get(`/v1/requests/${encodeURIComponent(this.id)}`);
    } catch (error) {
      replace(this.card, stateView(error.status === 404 ? "empty" : "error",
        error.status === 404 ? "No such request (yet)" : "The request could not be loaded", error.message));
      if (error.status !== 404) this.done();
      return;
    }
    const ended = ENDED[request.state] || null;
    this.explorer.setEnded(ended);
    if (ended) this.done();
    const path = runnerPath(request);
    const runnerLink = h("a", { href: path, class: "mono", onclick: (event) => { event.preventDefault(); this.navigate(path); } }, request.runner);
    const facts = [
      ["status", statusBadge(request)],
      ["state", h("span", { class: `badge state-${request.state}` }, request.state.replace(/_/g, " "))],
      ["app", request.app],
      ["version", request.version || "—"],
      ["runner", runnerLink],
      ["started", request.started ? clock(request.started, true) : "—"],
      ["ended", request.ended ? clock(request.ended, true) : ended ? "—" : "still running"],
      ["duration", request.duration_ms != null ? duration(request.duration_ms) : "—"],
      ["lines", count(request.records ?? 0)],
    ];
    replace(this.card,
      h("dl", { class: "facts facts-wide" }, facts.map(([name, value]) => [h("dt", null, name), h("dd", null, value)])),
      // The worker's error may hold several lines (a traceback): whole, as text.
      request.error ? h("div", { class: "request-error", role: "alert" },
        h("span", { class: "request-error-name" }, "error"),
        h("pre", { class: "error-text" }, request.error)) : null);
  }
}
