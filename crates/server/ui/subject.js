// A page about one subject, a runner or a request: a card of what the API
// says of it, refreshed until the subject ends, above an explorer of its
// lines. Subclasses fill the card in `refresh()` and call `done()` once
// there is nothing more to learn.

import { h, state as stateView } from "./dom.js";
import { Explorer } from "./explorer.js";

export class SubjectPage {
  constructor({ kind, title, head, base, aside, refreshMs, explorerState, navigate, onState }) {
    this.navigate = navigate;
    this.refreshMs = refreshMs;
    this.card = h("div", { class: "card" }, stateView("loading", `Loading the ${kind}…`));
    this.explorer = new Explorer({
      base, state: explorerState, onState, navigate,
      placeholder: `search this ${kind}'s lines: words, /regex/, level:>=warn  ( / )`,
    });
    this.element = h("div", { class: `page ${kind}-page` },
      h("div", { class: "page-head" }, head, h("h1", { class: "mono" }, title)),
      aside ? h("div", { class: "split" }, this.card, aside) : this.card,
      h("h2", { class: "section-title" }, "Logs"),
      this.explorer.element);
  }

  start() {
    this.explorer.start();
    this.refresh();
    this.timer = setInterval(() => this.refresh(), this.refreshMs);
  }

  stop() {
    this.done();
    this.explorer.stop();
  }

  /** Stops refreshing the card. */
  done() {
    clearInterval(this.timer);
  }
}
