// Times, durations and the text form of a record, as the UI shows and
// downloads them; and the console's own addresses of runners and requests.

export const LEVELS = ["trace", "debug", "info", "warn", "error", "fatal"];

/**
 * A record's time as a Date: the API writes nanoseconds, more fraction
 * digits than every browser's Date reads, so it is cut to milliseconds.
 */
export function parseTime(ts) {
  return new Date(typeof ts === "string" ? rfc3339Millis(ts) : ts);
}

/** `2026-11-21T10:00:00.123456789Z` as local `10:00:00.123` (with the date when asked). */
export function clock(ts, withDate = false) {
  const date = parseTime(ts);
  if (Number.isNaN(date.getTime())) return String(ts);
  const pad = (n, width = 2) => String(n).padStart(width, "0");
  const time = `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
  if (!withDate) return time;
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${time}`;
}

/** A time's local day, `2026-11-21`. */
export function localDay(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

/**
 * Whether times from `first` to `last` (Dates or milliseconds) fall on more
 * than one local day: times then need their dates to be told apart.
 */
export function spansDays(first, last) {
  return localDay(new Date(first)) !== localDay(new Date(last));
}

/** An RFC 3339 time cut to milliseconds, as the CLI writes it: `2026-11-21T10:00:00.123Z`. */
export function rfc3339Millis(ts) {
  const match = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?Z$/.exec(ts);
  if (!match) return ts;
  return `${match[1]}.${(match[2] || "").padEnd(3, "0").slice(0, 3)}Z`;
}

/** `812 ms`, `4.2 s`, `3 m 12 s`, `2 h 5 m`. */
export function duration(ms) {
  if (ms == null || Number.isNaN(ms)) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  const s = Math.round(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)} m ${s % 60} s`;
  const m = Math.round(s / 60);
  if (m < 48 * 60) return `${Math.floor(m / 60)} h ${m % 60} m`;
  return `${Math.floor(m / 1440)} d ${Math.floor((m % 1440) / 60)} h`;
}

/** `3 m ago` from a time. */
export function ago(ts) {
  if (!ts) return "—";
  const ms = Date.now() - parseTime(ts).getTime();
  if (ms < 5000) return "just now";
  if (ms < 60_000) return `${Math.round(ms / 1000)} s ago`;
  return `${duration(ms).replace(/ \d+ (s|m|h)$/, "")} ago`;
}

/** Parses `15m`, `2h`, `7d`, `90s` into milliseconds, or null. */
export function parseDuration(text) {
  const match = /^(\d+)(s|m|h|d)$/.exec(text || "");
  if (!match) return null;
  return Number(match[1]) * { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2]];
}

/** A time the API takes (RFC 3339, `now` or a duration ago) as a Date. */
export function resolveTime(text, now = Date.now()) {
  if (!text || text === "now") return new Date(now);
  const ago = parseDuration(text);
  if (ago != null) return new Date(now - ago);
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? null : date;
}

/** A runner's page, with its app: one runner id may be in several apps. */
export function runnerPath(runner) {
  return `/runners/${encodeURIComponent(runner.runner)}?app=${encodeURIComponent(runner.app)}`;
}

/** A request's page. */
export function requestPath(id) {
  return `/requests/${encodeURIComponent(id)}`;
}
