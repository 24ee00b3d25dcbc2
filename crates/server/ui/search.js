// The search box's language, turned into the filters of /v1/logs:
//
//   app:sdxl  runner:gpu-*  version:v3  request:req-42  level:>=warn
//   source:run  stream:stderr  field.status:500  -app:sdxl (not)
//   free words (whole words, in order)  "a quoted phrase"  /a regex/
//
// A `*` in a label's value makes it a pattern (`runner:gpu-*`).

const LABELS = ["app", "version", "runner", "boot"];
const PLAIN = ["request", "source", "stream", "level"];
export const QUALIFIERS = [...LABELS, ...PLAIN, "field.KEY"];

/** Splits on spaces, keeping "quoted phrases" and /regexes with spaces/ whole. */
function tokens(text) {
  const found = [];
  const pattern = /\s*(?:(-?[\w.]+:)?"((?:[^"\\]|\\.)*)"|\/((?:[^/\\]|\\.)+)\/|(\S+))/g;
  let match;
  while ((match = pattern.exec(text)) && match[0].trim() !== "") {
    if (match[2] != null) found.push({ qualifier: match[1]?.slice(0, -1), value: match[2].replace(/\\(.)/g, "$1"), quoted: true });
    else if (match[3] != null) found.push({ regex: match[3].replace(/\\\//g, "/") });
    else found.push({ word: match[4] });
  }
  return found;
}

function escapeRegex(text) {
  return text.replace(/[.+?^${}()|[\]\\]/g, "\\$&");
}

/**
 * The query string parameters a search means: `{params}` or `{error}` (a
 * message that says what to write instead).
 */
export function parseSearch(text) {
  const params = {};
  const words = [];
  const set = (name, value) => {
    if (params[name] != null) throw new Error(`${name.replace(/_.*/, "")} is given twice: give it once`);
    params[name] = value;
  };
  try {
    for (const token of tokens(text || "")) {
      if (token.regex != null) {
        set("regex", token.regex);
        continue;
      }
      let qualifier = token.qualifier;
      let value = token.value;
      if (token.word != null) {
        const colon = token.word.indexOf(":");
        const name = colon > 0 ? token.word.slice(0, colon) : "";
        if (/^-?[a-z_]+(\.[\w.-]+)?$/i.test(name)) {
          qualifier = name;
          value = token.word.slice(colon + 1);
        } else {
          words.push(token.word);
          continue;
        }
      }
      if (qualifier == null) {
        words.push(value);
        continue;
      }
      const negated = qualifier.startsWith("-");
      const name = (negated ? qualifier.slice(1) : qualifier).toLowerCase();
      if (name.startsWith("field.") && name.length > 6 && !negated) {
        set(`field.${qualifier.slice(6)}`, value);
      } else if (LABELS.includes(name)) {
        const pattern = value.includes("*");
        const form = (negated ? "_not" : "") + (pattern ? "_re" : "");
        const matched = pattern ? value.split("*").map(escapeRegex).join(".*") : value;
        set(`${name}${negated && !pattern ? "_not" : form}`, matched);
      } else if (PLAIN.includes(name) && !negated) {
        set(name, name === "level" ? value.replace(/^>=?/, "") : value);
      } else {
        throw new Error(`unknown qualifier '${qualifier}:': use ${QUALIFIERS.map((q) => q + ":").join(" ")} free words, "a phrase" or /a regex/`);
      }
    }
  } catch (error) {
    return { error: error.message };
  }
  if (words.length) params.text = words.join(" ");
  return { params };
}

/** The search text with `name:value` set (replacing any earlier one). */
export function withQualifier(text, name, value) {
  const kept = (text || "").split(/\s+/).filter((word) => word && !new RegExp(`^-?${name}:`, "i").test(word));
  const quoted = /\s/.test(value) ? `"${value}"` : value;
  return [...kept, `${name}:${quoted}`].join(" ");
}
