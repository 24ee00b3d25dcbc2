// One request's page: its status, timing and runner from
// `/v1/requests/{id}`, and its logs, live while it runs.

import { h, replace, state as stateView, count } from "./dom.js";
import { get } from "./api.js";
import { clock, duration, parseTime, runnerPath } from "./format.js";
import { SubjectPage } from "./subject.js";

const REFRESH_MS = 2000;

function statusBadge(status) {
  if (status == null) return h("span", { class: "badge state-running" }, "no status yet");
  const kind = status >= 500 ? "error" : status >= 400 ? "warn" : "ok";
  return h("span", { class: `badge status-${kind}` }, String(status));
}

export class RequestPage extends SubjectPage {
  constructor({ id, explorerState, navigate, onState }) {
    super({
      kind: "request", title: id, head: h("span", { class: "dim" }, "Request"), base: { request: id },
      refreshMs: REFRESH_MS, explorerState, navigate, onState,
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
    if (request.ended) this.done();
    this.explorer.setBounds(parseTime(request.started), request.ended ? parseTime(request.ended) : null);
    const path = runnerPath(request);
    const runnerLink = h("a", { href: path, class: "mono", onclick: (event) => { event.preventDefault(); this.navigate(path); } }, request.runner);
    const facts = [
      ["status", statusBadge(request.status)],
      ["state", h("span", { class: `badge state-${request.state}` }, request.state.replace(/_/g, " "))],
      ["app", request.app],
      ["version", request.version || "—"],
      ["runner", runnerLink],
      ["started", request.started ? clock(request.started, true) : "—"],
      ["ended", request.ended ? clock(request.ended, true) : "still running"],
      ["duration", request.duration_ms != null ? duration(request.duration_ms) : "—"],
      ["lines", count(request.records ?? 0)],
    ];
    if (request.error) facts.splice(2, 0, ["error", h("span", { class: "error-text" }, request.error)]);
    replace(this.card, h("dl", { class: "facts facts-wide" }, facts.map(([name, value]) => [h("dt", null, name), h("dd", null, value)])));
  }
}
