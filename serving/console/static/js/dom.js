// DOM helpers: elements are built with h() (text is always set as text, never parsed as HTML), tables that
// become labelled cards on narrow screens, number and time formats, toasts, dialogs.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

// A table; each cell carries its column's label so that CSS can lay rows out as cards on a phone.
// columns: [{label, render(row) -> node|string, class?}]
export function table(columns, rows, { empty = "Nothing yet.", caption = null, rowAttrs = null } = {}) {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "table" },
      caption ? h("caption", { class: "visually-hidden" }, caption) : null,
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.class }, c.label)))),
      h(
        "tbody",
        {},
        rows.map((row) =>
          h(
            "tr",
            rowAttrs ? rowAttrs(row) : {},
            columns.map((c) => h("td", { "data-label": c.label, class: c.class }, c.render(row))),
          ),
        ),
      ),
    ),
  );
}

export function badge(text, kind = "neutral", title = null) {
  return h("span", { class: `badge badge-${kind}`, title }, text);
}

export function chip(text, extra = "", title = null) {
  return h("span", { class: `chip ${extra}`.trim(), title: title ?? String(text) }, text);
}

const STATE_KINDS = {
  ready: "ok", loaded: "ok", succeeded: "ok", healthy: "ok",
  syncing: "warn", queued: "info", running: "info", missing: "warn",
  unhealthy: "bad", failed: "bad", down: "bad", cancelled: "neutral",
};
export const stateBadge = (state, title = null) => badge(state, STATE_KINDS[state] || "neutral", title);

export const plural = (n, word, many = `${word}s`) => `${num(n, 0)} ${n === 1 ? word : many}`;

// A path or id that may break after each "/" (and nowhere inside a name) when its column is narrow.
export function breakable(text) {
  const parts = String(text).split("/");
  return h("code", { class: "path", title: String(text) }, parts.flatMap((part, i) => (i ? ["/", h("wbr"), part] : [part])));
}

export function num(value, digits = 2) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  return Number(value).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
}

export function fixed(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  return Number(value).toFixed(digits);
}

export function pct(value, digits = 1) {
  if (value === null || value === undefined) return "—";
  return `${(value * 100).toFixed(digits)} %`;
}

export function seconds(value) {
  if (value === null || value === undefined) return "—";
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  if (value < 120) return `${value.toFixed(value < 10 ? 2 : 1)} s`;
  const m = Math.floor(value / 60);
  return `${m} min ${Math.round(value - m * 60)} s`;
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

export function when(value) {
  if (value === null || value === undefined || value === "") return "—";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "short" });
}

export function ago(unixSeconds) {
  const s = Math.max(0, Math.round(Date.now() / 1000 - unixSeconds));
  if (s < 5) return "just now";
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

export function toast(message, kind = "info", timeoutMs = 6000) {
  const box = document.getElementById("toasts");
  const item = h(
    "div",
    { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" },
    h("span", {}, message),
    h("button", { type: "button", class: "toast-close", "aria-label": "Dismiss", onclick: () => item.remove() }, "×"),
  );
  box.append(item);
  if (timeoutMs) setTimeout(() => item.remove(), timeoutMs);
  return item;
}

// Shows an API error next to a form (message, and the parameter it names).
export function showError(el, error) {
  if (!error) {
    el.hidden = true;
    el.textContent = "";
    return;
  }
  const param = error.param ? ` (${error.param})` : "";
  el.textContent = `${error.message || String(error)}${param}`;
  el.hidden = false;
}

// Opens a <dialog> with a confirm/cancel <form method="dialog">; resolves true on confirm.
export function confirmDialog(dialog) {
  return new Promise((resolve) => {
    const done = () => {
      dialog.removeEventListener("close", done);
      resolve(dialog.returnValue === "confirm");
    };
    dialog.returnValue = "";
    dialog.addEventListener("close", done);
    dialog.showModal();
  });
}

export function wireCloseButtons(root = document) {
  for (const button of $$("[data-close]", root)) {
    button.addEventListener("click", () => button.closest("dialog").close());
  }
}

// A definition list of an object's scalar fields; nested objects become nested lists.
export function kv(obj, { skip = [] } = {}) {
  const dl = h("dl", { class: "kv" });
  for (const [key, value] of Object.entries(obj || {})) {
    if (skip.includes(key) || value === null || value === undefined) continue;
    dl.append(h("dt", {}, key));
    if (Array.isArray(value)) {
      dl.append(h("dd", {}, value.every((v) => typeof v !== "object") ? value.join(", ") || "—" : value.map((v) => kv(v))));
    } else if (typeof value === "object") {
      dl.append(h("dd", {}, kv(value)));
    } else {
      dl.append(h("dd", {}, typeof value === "number" ? num(value, 4) : String(value)));
    }
  }
  return dl;
}

// Polls fn every intervalMs while the tab is visible; returns a stop function.
export function every(intervalMs, fn) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    if (stopped) return;
    if (!document.hidden) {
      try {
        await fn();
      } catch (err) {
        console.warn(err);
      }
    }
    if (!stopped) timer = setTimeout(tick, typeof intervalMs === "function" ? intervalMs() : intervalMs);
  };
  tick();
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && !stopped) {
      clearTimeout(timer);
      tick();
    }
  });
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

// A small SVG line chart of [{t, values...}] for the given series keys.
export function lineChart(points, series, { height = 120 } = {}) {
  const ns = "http://www.w3.org/2000/svg";
  const width = 600;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", "linechart");
  if (points.length < 2) return svg;
  const t0 = points[0].t;
  const t1 = points[points.length - 1].t;
  const max = Math.max(1e-9, ...points.flatMap((p) => series.map((s) => p[s.key] || 0)));
  const x = (t) => ((t - t0) / Math.max(1e-9, t1 - t0)) * width;
  const y = (v) => height - 4 - (v / max) * (height - 12);
  for (const frac of [0.25, 0.5, 0.75]) {
    const line = document.createElementNS(ns, "line");
    line.setAttribute("x1", "0");
    line.setAttribute("x2", String(width));
    line.setAttribute("y1", String(y(max * frac)));
    line.setAttribute("y2", String(y(max * frac)));
    line.setAttribute("class", "grid");
    svg.append(line);
  }
  for (const s of series) {
    const path = document.createElementNS(ns, "polyline");
    path.setAttribute("points", points.map((p) => `${x(p.t).toFixed(1)},${y(p[s.key] || 0).toFixed(1)}`).join(" "));
    path.setAttribute("class", `series ${s.class}`);
    path.setAttribute("vector-effect", "non-scaling-stroke");
    svg.append(path);
  }
  return svg;
}
