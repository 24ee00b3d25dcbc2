// A page about one subject, a runner or a request: a card of what the API
// says of it, refreshed until the subject ends, above an explorer of its
// lines. Subclasses fill the card in `refresh()`, tell the explorer when the
// subject has ended (`explorer.setEnded`), and call `done()` once there is
// nothing more to learn. The lines load once the card has first said
// whether the subject goes on: an ended one is never followed live.

import { h, copyButton, state as stateView } from "./dom.js";
import { Explorer, SUBJECT_DEFAULTS } from "./explorer.js";

export class SubjectPage {
  constructor({ kind, title, head, base, aside, refreshMs, search, navigate, onState }) {
    this.navigate = navigate;
    this.refreshMs = refreshMs;
    this.card = h("div", { class: "card" }, stateView("loading", `Loading the ${kind}…`));
    this.explorer = new Explorer({
      base, search, defaults: SUBJECT_DEFAULTS, onState, navigate,
      placeholder: `search this ${kind}'s lines: words, /regex/, level:>=warn  ( / )`,
    });
    this.element = h("div", { class: `page ${kind}-page` },
      h("div", { class: "page-head" }, head,
        h("h1", { class: "mono subject-id", title }, title),
        copyButton(`copy ${kind} id`, () => title, `copy ${title}`)),
      aside ? h("div", { class: "split" }, this.card, aside) : this.card,
      h("h2", { class: "section-title" }, "Logs"),
      this.explorer.element);
  }

  start() {
    this.refresh().finally(() => {
      if (this.stopped) return;
      this.explorer.start();
      if (!this.finished) this.timer = setInterval(() => this.refresh(), this.refreshMs);
    });
  }

  stop() {
    this.stopped = true;
    this.done();
    this.explorer.stop();
  }

  /** Stops refreshing the card. */
  done() {
    this.finished = true;
    clearInterval(this.timer);
  }
}
