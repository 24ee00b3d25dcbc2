// The one way the UI makes DOM: elements with properties and children, text
// always as text nodes. Log text is never parsed as HTML.

/** `h("a", {class: "x", href, onclick}, "text", child)`. */
export function h(tag, props, ...children) {
  const element = document.createElement(tag);
  setProps(element, props);
  append(element, children);
  return element;
}

/** An SVG element (for the histogram). */
export function svg(tag, attributes) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value != null) element.setAttribute(name, String(value));
  }
  return element;
}

function setProps(element, props) {
  for (const [name, value] of Object.entries(props || {})) {
    if (value == null || value === false) continue;
    if (name === "class") element.className = value;
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "value" || name === "checked" || name === "selected") element[name] = value;
    else element.setAttribute(name, value === true ? "" : String(value));
  }
}

export function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** Replaces an element's children. */
export function replace(element, ...children) {
  element.replaceChildren();
  return append(element, children);
}

/** A clear empty, loading or error state. */
export function state(kind, title, detail) {
  return h("div", { class: `state state-${kind}`, role: kind === "error" ? "alert" : "status" },
    h("div", { class: "state-title" }, title),
    detail ? h("div", { class: "state-detail" }, detail) : null);
}

/** `1234567` as `1,234,567`. */
export function count(number) {
  return Number(number).toLocaleString("en-US");
}

/**
 * A button that copies `text()` to the clipboard and says so: through the
 * Clipboard API, else the older `execCommand("copy")` a page may use
 * without permission.
 */
export function copyButton(label, text, title) {
  const button = h("button", { type: "button", class: "link copy", title, dataset: { copy: label }, onclick: async (event) => {
    event.stopPropagation();
    const copied = await copyText(text());
    button.textContent = copied ? "copied" : "could not copy: select it and press Ctrl+C";
    button.classList.toggle("copied", copied);
    setTimeout(() => {
      button.textContent = label;
      button.classList.remove("copied");
    }, 2000);
  } }, label);
  return button;
}

/** How long the Clipboard API may take to answer before the older way is tried. */
const CLIPBOARD_WAIT_MS = 1000;

async function copyText(text) {
  try {
    // A browser may leave the promise pending (a permission never asked).
    const late = new Promise((_, reject) => setTimeout(() => reject(new Error("no answer")), CLIPBOARD_WAIT_MS));
    await Promise.race([navigator.clipboard.writeText(text), late]);
    return true;
  } catch {
    // Not allowed here (or no Clipboard API): the older way.
  }
  const area = h("textarea", { class: "copy-area", readonly: true, "aria-hidden": "true" });
  area.value = text;
  document.body.append(area);
  area.select();
  let copied = false;
  try {
    copied = document.execCommand("copy");
  } catch {
    copied = false;
  }
  area.remove();
  return copied;
}
