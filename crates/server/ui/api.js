// Talking to the tailwater API: the session (token and tenant, in this tab's
// session storage), JSON calls with clear errors, and live tail read from a
// fetch() stream (EventSource cannot send the Authorization header).

const SESSION_KEY = "tailwater.session";

/** The signed-in token and the tenant picked, or null. */
export function loadSession() {
  try {
    const session = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    return session && typeof session.token === "string" ? session : null;
  } catch {
    return null;
  }
}

export function saveSession(session) {
  if (session) sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  else sessionStorage.removeItem(SESSION_KEY);
}

/** An API error: the server's `{"error": {"code", "message"}}`, or a network one. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Fired on any 401, so the shell can ask for a new token. */
export const signedOut = new EventTarget();

function url(path, params) {
  const session = loadSession();
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    if (value != null && value !== "") query.set(name, value);
  }
  if (session?.tenant && !query.has("tenant")) query.set("tenant", session.tenant);
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

function headers(token, extra) {
  const session = loadSession();
  return { Authorization: `Bearer ${token ?? session?.token ?? ""}`, ...extra };
}

/** The API's error from a failed response; a 401 to the session's own token signs it out. */
async function failure(response, ownToken = true) {
  let code = "http_" + response.status;
  let message = `the server answered ${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body?.error) ({ code, message } = body.error);
  } catch {
    // Not our JSON error: keep the status line.
  }
  const error = new ApiError(response.status, code, message);
  if (response.status === 401 && ownToken) signedOut.dispatchEvent(new CustomEvent("signedout", { detail: error }));
  return error;
}

/** GET `path` with `params`: the response, or an ApiError. */
async function fetchOk(path, params, { signal, token } = {}) {
  let response;
  try {
    response = await fetch(url(path, params), { headers: headers(token), signal, cache: "no-store" });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network", "cannot reach the tailwater server: is it running? retry in a moment");
  }
  if (!response.ok) throw await failure(response, token == null);
  return response;
}

/** GET `path` with `params`; the parsed JSON, or an ApiError. */
export async function get(path, params, options) {
  return (await fetchOk(path, params, options)).json();
}

/** GET `path` with `params`; the body as a Blob (an export), or an ApiError. */
export async function getBlob(path, params, options) {
  return (await fetchOk(path, params, options)).blob();
}

/**
 * Follows `/v1/logs/tail` (or another SSE path): calls `onRecord` for each
 * record, from after id `after`. Reconnects after a drop, resuming with
 * `Last-Event-ID`, so nothing is missed or repeated. Ends when `signal`
 * aborts; `onStatus` hears "live", "reconnecting" and errors.
 */
export async function follow(path, params, { after, signal, onRecord, onStatus }) {
  let lastId = after;
  let delay = 250;
  while (!signal.aborted) {
    try {
      const extra = lastId != null ? { "Last-Event-ID": String(lastId) } : {};
      const response = await fetch(url(path, params), {
        headers: headers(null, { Accept: "text/event-stream", ...extra }),
        signal,
        cache: "no-store",
      });
      if (!response.ok) {
        const error = await failure(response);
        // A bad filter or a revoked token will not get better by retrying.
        if (response.status >= 400 && response.status < 500) {
          onStatus?.("error", error);
          return;
        }
        throw error;
      }
      onStatus?.("live");
      delay = 250;
      for await (const event of events(response.body, signal)) {
        if (event.id) lastId = event.id;
        if (event.type === "record") onRecord(JSON.parse(event.data));
      }
    } catch (error) {
      if (signal.aborted || error.name === "AbortError") return;
      onStatus?.("reconnecting", error);
    }
    if (signal.aborted) return;
    onStatus?.("reconnecting");
    await sleep(delay, signal);
    delay = Math.min(delay * 2, 5000);
  }
}

/** Server-sent events from a byte stream: `{type, id, data}`. */
async function* events(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  const abort = () => reader.cancel().catch(() => {});
  signal.addEventListener("abort", abort, { once: true });
  let buffer = "";
  let event = { type: "message", id: null, data: [] };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let newline;
      while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
        if (line === "") {
          if (event.data.length) yield { type: event.type, id: event.id, data: event.data.join("\n") };
          event = { type: "message", id: null, data: [] };
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") event.type = value;
        else if (field === "data") event.data.push(value);
        else if (field === "id") event.id = value;
      }
    }
  } finally {
    signal.removeEventListener("abort", abort);
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}
