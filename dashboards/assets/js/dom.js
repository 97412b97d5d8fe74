// Building DOM without innerHTML: text always goes in as text, so a
// patient name or an alert explanation can never become markup.

/**
 * h("button", {type: "button", onclick: f, class: "x"}, "Text", child…)
 * Attributes starting with "on" become listeners; `null`/`false` ones are
 * left out; children may be strings, numbers, nodes, arrays or null.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") {
      el.addEventListener(k.slice(2), v);
    } else if (k === "dataset") {
      Object.assign(el.dataset, v);
    } else if (v === true) {
      el.setAttribute(k, "");
    } else {
      el.setAttribute(k, String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

/** Replaces the children of `el`. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** Reads a form's named fields into an object (trimmed strings). */
export function formData(form) {
  const out = {};
  for (const [k, v] of new FormData(form).entries()) {
    out[k] = typeof v === "string" ? v.trim() : v;
  }
  return out;
}

/** Says `text` to screen readers through the page's live region. */
export function announce(text) {
  const el = document.getElementById("announcer");
  if (!el) return;
  // Clearing first makes a repeat of the same words be read again.
  el.textContent = "";
  setTimeout(() => { el.textContent = text; }, 50);
}
