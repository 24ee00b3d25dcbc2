// The shell of the tailwater console: sign-in, the header (pages, tenant and
// app pickers), the router over the page's own addresses, and keyboard
// shortcuts. Each page is a class with `element`, `start()` and `stop()`.

import { h, replace, state as stateView } from "./dom.js";
import { get, loadSession, saveSession, signedOut } from "./api.js";
import { Explorer } from "./explorer.js";
import { RunnersPage, RunnerPage } from "./runners.js";
import { RequestPage } from "./request.js";
import { requestPath } from "./format.js";

const root = document.getElementById("app");
let page = null;
let signInMessage = "";

/** Opens a page of the console (one of its own paths, with a query string). */
function navigate(path) {
  history.pushState(null, "", path);
  render();
}

window.addEventListener("popstate", () => render());
signedOut.addEventListener("signedout", (event) => {
  saveSession(null);
  signInMessage = `signed out: ${event.detail.message}`;
  render();
});

/** The query string of the current address, with `change` applied (null removes). */
function withQuery(change) {
  const query = new URLSearchParams(location.search);
  for (const [name, value] of Object.entries(change)) {
    if (value == null || value === "") query.delete(name);
    else query.set(name, value);
  }
  const text = query.toString();
  return `${location.pathname}${text ? `?${text}` : ""}`;
}

/** Keeps the explorer's state (as a query string) in the address, so a link reopens the same view. */
function explorerStateChanged(state) {
  const app = new URLSearchParams(location.search).get("app");
  const query = new URLSearchParams(state);
  if (app) query.set("app", app);
  const text = query.toString();
  history.replaceState(null, "", `${location.pathname}${text ? `?${text}` : ""}`);
}

function render() {
  page?.stop();
  page = null;
  const session = loadSession();
  if (!session) {
    replace(root, signIn());
    root.querySelector("input")?.focus();
    return;
  }
  const path = location.pathname;
  const query = new URLSearchParams(location.search);
  const app = query.get("app") || "";
  let match;
  if (session.limited && !path.startsWith("/requests/")) {
    // A caller's token reads one request at a time, and nothing else.
    page = null;
  } else if (path === "/") {
    page = new Explorer({ base: { app }, search: location.search, onState: explorerStateChanged, navigate });
    page.element.classList.add("page", "logs-page");
  } else if (path === "/runners") {
    page = new RunnersPage({ app, state: query.get("state"), navigate, onState: ({ state }) => history.replaceState(null, "", withQuery({ state })) });
  } else if ((match = /^\/runners\/([^/]+)$/.exec(path))) {
    page = new RunnerPage({ runner: decodePart(match[1]), app, search: location.search, navigate, onState: explorerStateChanged });
  } else if ((match = /^\/requests\/([^/]+)$/.exec(path))) {
    page = new RequestPage({ id: decodePart(match[1]), search: location.search, navigate, onState: explorerStateChanged });
  }
  const view = page
    ? page.element
    : session.limited
      ? stateView("empty", "This token reads one request's logs at a time", "Type a request id in the box above to open its page.")
      : stateView("empty", "No such page", "Open Logs or Runners above.");
  document.title = `${titleOf(path)} · tailwater`;
  replace(root, header(session, path, app), h("main", { class: "main" }, view));
  page?.start();
}

/** One part of a path, decoded (as written when it is not valid). */
function decodePart(part) {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

/** The tab's title for a page of the console. */
function titleOf(path) {
  const [, section, id] = path.split("/").map(decodePart);
  if (section === "runners") return id ? `runner ${id}` : "Runners";
  if (section === "requests") return `request ${id}`;
  return "Logs";
}

function header(session, path, app) {
  const link = (href, label, active) => h("a", { href, class: active ? "nav-link active" : "nav-link", onclick: (event) => { event.preventDefault(); navigate(href + appQuery(app)); } }, label);
  const tenantPicker = h("select", { class: "picker", "aria-label": "tenant", title: "tenant", onchange: () => {
    saveSession({ ...loadSession(), tenant: tenantPicker.value });
    // The same view in the other tenant, but for the app: apps are a tenant's own.
    navigate(withQuery({ app: null }));
  } }, (session.tenants || [session.tenant || "—"]).map((name) => h("option", { value: name, selected: name === session.tenant }, name)));
  tenantPicker.disabled = !session.tenants || session.tenants.length < 2;
  const appPicker = h("select", { class: "picker", "aria-label": "app", title: "app", onchange: () => navigate(withQuery({ app: appPicker.value })) },
    h("option", { value: "" }, "all apps"), app ? h("option", { value: app, selected: true }, app) : null);
  if (!session.limited) {
    get("/v1/apps").then((apps) => {
      replace(appPicker, h("option", { value: "" }, "all apps"),
        apps.map((info) => h("option", { value: info.name, selected: info.name === app }, info.name)));
      if (app && !apps.some((info) => info.name === app)) appPicker.append(h("option", { value: app, selected: true }, app));
    }).catch(() => {});
  }
  const goTo = h("input", { type: "search", class: "goto", placeholder: "request id…", "aria-label": "open a request by id" });
  return h("header", { class: "topbar" },
    h("a", { href: "/", class: "brand", onclick: (event) => { event.preventDefault(); navigate("/"); } },
      h("img", { src: "/ui/favicon.svg", alt: "", width: 22, height: 22 }), "tailwater"),
    session.limited ? null : h("nav", { class: "nav" }, link("/", "Logs", path === "/"), link("/runners", "Runners", path.startsWith("/runners"))),
    h("form", { class: "goto-form", onsubmit: (event) => { event.preventDefault(); if (goTo.value.trim()) navigate(requestPath(goTo.value.trim())); } }, goTo),
    h("div", { class: "spacer" }),
    session.limited ? null : h("label", { class: "picker-label" }, "tenant", tenantPicker),
    session.limited ? null : h("label", { class: "picker-label" }, "app", appPicker),
    h("button", { type: "button", class: "button ghost", title: "keyboard shortcuts (?)", onclick: toggleHelp }, "?"),
    h("button", { type: "button", class: "button ghost signout", onclick: () => { saveSession(null); signInMessage = ""; render(); } }, "Sign out"));
}

function appQuery(app) {
  return app ? `?app=${encodeURIComponent(app)}` : "";
}

function signIn() {
  const token = h("input", { type: "password", name: "token", class: "token-input", placeholder: "tw_…", autocomplete: "off", spellcheck: "false", "aria-label": "API token", required: true });
  const message = h("div", { class: "signin-error", role: "alert", hidden: !signInMessage }, signInMessage);
  const button = h("button", { type: "submit", class: "button primary" }, "Sign in");
  const form = h("form", { class: "signin card", onsubmit: async (event) => {
    event.preventDefault();
    const secret = token.value.trim();
    button.disabled = true;
    message.hidden = true;
    try {
      const tenants = await get("/v1/tenants", {}, { token: secret });
      const names = tenants.map((tenant) => tenant.name);
      saveSession({ token: secret, tenants: names, tenant: names.includes("default") ? "default" : names[0] });
    } catch (error) {
      if (error.status === 403) {
        // A caller's token: it reads one request's logs at a time.
        saveSession({ token: secret, tenant: null, limited: true });
      } else {
        button.disabled = false;
        message.hidden = false;
        replace(message, error.status === 401 ? `that token was refused: ${error.message}` : error.message);
        return;
      }
    }
    signInMessage = "";
    render();
  } },
  h("div", { class: "signin-brand" }, h("img", { src: "/ui/favicon.svg", alt: "", width: 40, height: 40 }), h("span", null, "tailwater")),
  h("p", { class: "dim" }, "Sign in with an API token. It stays in this tab only (session storage) and is sent to this server alone."),
  h("label", { class: "field" }, h("span", null, "Token"), token),
  message,
  button,
  h("p", { class: "hint" }, "No token? ", h("code", null, "tailwater token create --scope owner"), " prints one; the server prints an admin token on its first start."));
  return h("div", { class: "signin-page" }, form);
}

// --- keyboard shortcuts ---

const SHORTCUTS = [["/", "search"], ["f", "follow live (toggle)"], ["n", "newest first"], ["o", "oldest first"], ["g", "go to the top"], ["G", "go to the end"], ["?", "this help"], ["Esc", "leave the search box, close this"]];
let help = null;

function toggleHelp() {
  if (help) {
    help.remove();
    help = null;
    return;
  }
  help = h("div", { class: "help-overlay", onclick: (event) => { if (event.target === help) toggleHelp(); } },
    h("div", { class: "card help" }, h("h2", null, "Keyboard shortcuts"),
      h("dl", { class: "facts" }, SHORTCUTS.map(([key, what]) => [h("dt", null, h("kbd", null, key)), h("dd", null, what)]))));
  document.body.append(help);
}

/** The page's explorer, if it has one. */
function explorer() {
  return page instanceof Explorer ? page : page?.explorer;
}

document.addEventListener("keydown", (event) => {
  const typing = event.target.closest?.("input, textarea, select");
  if (event.key === "Escape") {
    if (help) toggleHelp();
    else if (typing) event.target.blur();
    return;
  }
  if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
  const current = explorer();
  const actions = {
    "/": () => current?.focusSearch(),
    f: () => current?.toggleLive(),
    n: () => current?.update({ order: "newest" }),
    o: () => current?.update({ order: "oldest" }),
    g: () => { if (current) current.view.element.scrollTop = 0; },
    G: () => current?.view.scrollToEnd(),
    "?": toggleHelp,
  };
  const action = actions[event.key];
  if (action) {
    event.preventDefault();
    action();
  }
});

render();
