// ANSI colours in log text, rendered safely: the text is split on SGR escape
// sequences (`ESC [ … m`) into text nodes inside styled spans. Other escape
// sequences (cursor moves, titles) are dropped. Nothing is ever parsed as HTML.

import { h } from "./dom.js";

// eslint-disable-next-line no-control-regex
const ESCAPES = /\x1b\[([0-9;:]*)([A-Za-z])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]/g;

/** Whether a message holds escape sequences at all (most do not). */
export function hasEscapes(text) {
  return text.includes("\x1b");
}

/** The text without escape sequences (for search, copy and downloads). */
export function stripAnsi(text) {
  return text.replace(ESCAPES, "");
}

const PALETTE_16 = [
  "#1e1e1e", "#f87171", "#4ade80", "#facc15", "#60a5fa", "#e879f9", "#22d3ee", "#e5e7eb",
  "#6b7280", "#fca5a5", "#86efac", "#fde047", "#93c5fd", "#f0abfc", "#67e8f9", "#ffffff",
];

function color256(n) {
  if (n < 16) return PALETTE_16[n];
  if (n >= 232) {
    const level = 8 + (n - 232) * 10;
    return `rgb(${level},${level},${level})`;
  }
  const index = n - 16;
  const steps = [0, 95, 135, 175, 215, 255];
  return `rgb(${steps[Math.floor(index / 36)]},${steps[Math.floor(index / 6) % 6]},${steps[index % 6]})`;
}

/** Applies one SGR sequence's codes to the current style. */
function apply(style, codes) {
  for (let i = 0; i < codes.length; i++) {
    const code = codes[i];
    if (code === 0) Object.assign(style, { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false });
    else if (code === 1) style.bold = true;
    else if (code === 2) style.dim = true;
    else if (code === 3) style.italic = true;
    else if (code === 4) style.underline = true;
    else if (code === 22) style.bold = style.dim = false;
    else if (code === 23) style.italic = false;
    else if (code === 24) style.underline = false;
    else if (code >= 30 && code <= 37) style.fg = PALETTE_16[code - 30];
    else if (code >= 90 && code <= 97) style.fg = PALETTE_16[code - 90 + 8];
    else if (code >= 40 && code <= 47) style.bg = PALETTE_16[code - 40];
    else if (code >= 100 && code <= 107) style.bg = PALETTE_16[code - 100 + 8];
    else if (code === 39) style.fg = null;
    else if (code === 49) style.bg = null;
    else if (code === 38 || code === 48) {
      let value = null;
      if (codes[i + 1] === 5 && codes[i + 2] != null) {
        value = color256(codes[i + 2]);
        i += 2;
      } else if (codes[i + 1] === 2 && codes[i + 4] != null) {
        value = `rgb(${codes[i + 2]},${codes[i + 3]},${codes[i + 4]})`;
        i += 4;
      }
      if (code === 38) style.fg = value;
      else style.bg = value;
    }
  }
}

function span(text, style) {
  if (!style.fg && !style.bg && !style.bold && !style.dim && !style.italic && !style.underline) {
    return document.createTextNode(text);
  }
  const element = h("span", { class: [style.bold && "ansi-bold", style.dim && "ansi-dim", style.italic && "ansi-italic", style.underline && "ansi-underline"].filter(Boolean).join(" ") }, text);
  // CSSOM, not a style attribute: allowed by the page's Content-Security-Policy.
  if (style.fg) element.style.color = style.fg;
  if (style.bg) element.style.backgroundColor = style.bg;
  return element;
}

/** The message as nodes: text, and spans for coloured runs. */
export function renderAnsi(text) {
  if (!hasEscapes(text)) return [document.createTextNode(text)];
  const nodes = [];
  const style = { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false };
  let last = 0;
  for (const match of text.matchAll(ESCAPES)) {
    if (match.index > last) nodes.push(span(text.slice(last, match.index), style));
    last = match.index + match[0].length;
    if (match[2] === "m") apply(style, (match[1] || "0").split(/[;:]/).map((n) => Number(n || 0)));
  }
  if (last < text.length) nodes.push(span(text.slice(last), style));
  return nodes;
}
