// One collection: settings and tuning result (GET /v1/collections/{c}), drag-and-drop upload with progress
// (POST /v1/collections/{c}/documents, multipart), document deletion (DELETE .../documents/{id}), and a search
// playground (POST /v1/retrieve) showing each stage's score and the chunk text with the query terms marked.

import { api, upload } from "../api.js";
import { $, badge, breakable, bytes, chip, clear, fixed, h, kv, num, plural, showError, table, toast, when } from "../dom.js";
import { highlighted, queryTerms, tuningOf } from "../shared.js";
import { boot } from "../shell.js";

const name = document.getElementById("main").dataset.collection;
const STAGES = [
  ["dense", "Dense (cosine)"],
  ["bm25", "BM25"],
  ["fused", "Fused"],
  ["rerank", "Rerank"],
];
const docsKey = `ragswap.console.docs.${name}`;

function rememberedDocs() {
  try {
    return JSON.parse(sessionStorage.getItem(docsKey) || "[]");
  } catch {
    return [];
  }
}

function rememberDoc(id) {
  const docs = rememberedDocs().filter((d) => d !== id);
  docs.unshift(id);
  sessionStorage.setItem(docsKey, JSON.stringify(docs.slice(0, 50)));
}

function forgetDoc(id) {
  sessionStorage.setItem(docsKey, JSON.stringify(rememberedDocs().filter((d) => d !== id)));
}

function renderDocs() {
  const docs = rememberedDocs();
  clear(
    $("#doc-list"),
    docs.length
      ? docs.map((id) =>
          h("li", { "data-document": id }, h("code", { class: "break" }, id),
            h("button", { type: "button", class: "btn btn-sm btn-danger", "data-admin": true, onclick: () => deleteDoc(id) }, "Delete")),
        )
      : h("li", { class: "empty" }, "No upload from this tab yet."),
  );
}

// The tuning report stored with the collection (POST /v1/collections/{c}/tune): held-apart metrics before and
// after, the settings it replaced and chose, and how many judged queries it used.
function renderTuning(tuning) {
  const root = $("#tuning");
  if (!tuning) {
    clear(root);
    return;
  }
  const before = tuning.before ?? {};
  const after = tuning.after ?? {};
  const value = (v) => (typeof v === "number" ? v : v?.mean);
  const ci = (v) => {
    const low = v?.low ?? v?.ci_low;
    const high = v?.high ?? v?.ci_high;
    return low === undefined || low === null ? "" : ` [${fixed(low)}, ${fixed(high)}]`;
  };
  const metrics = Object.keys(after).filter((k) => typeof value(after[k]) === "number");
  // Settings come grouped (``{"bm25": {...}, "search": {...}}``): one row per setting, named ``group.key``.
  const flat = (o) =>
    Object.fromEntries(
      Object.entries(o ?? {}).flatMap(([k, v]) =>
        v && typeof v === "object" && !Array.isArray(v) ? Object.entries(v).map(([k2, v2]) => [`${k}.${k2}`, v2]) : [[k, v]],
      ),
    );
  const previous = flat(tuning.previous);
  const chosen = flat(tuning.chosen);
  const settings = [...new Set([...Object.keys(previous), ...Object.keys(chosen)])];
  const show = (v) => (v === undefined || v === null ? "—" : typeof v === "object" ? JSON.stringify(v) : String(v));
  clear(
    root,
    h("h3", {}, "Tuning result ", badge(tuning.stored === false ? "dry run" : "tuned", "ok")),
    metrics.length
      ? table(
          [
            { label: "Held-apart metric", render: (k) => h("code", {}, k) },
            { label: "Before", render: (k) => `${fixed(value(before[k]))}${ci(before[k])}`, class: "num" },
            { label: "After", render: (k) => `${fixed(value(after[k]))}${ci(after[k])}`, class: "num" },
            { label: "Δ", render: (k) => delta(value(after[k]) - value(before[k])), class: "num" },
          ],
          metrics,
          { rowAttrs: (k) => ({ "data-tuned-metric": k }) },
        )
      : null,
    settings.length
      ? table(
          [
            { label: "Setting", render: (k) => h("code", {}, k) },
            { label: "Previous", render: (k) => show(previous[k]) },
            { label: "Chosen", render: (k) => h("strong", {}, show(chosen[k])) },
          ],
          settings,
        )
      : null,
    kv(tuning, { skip: ["before", "after", "previous", "chosen", "grid", "collection"] }),
  );
}

function delta(d) {
  if (d === null || d === undefined || Number.isNaN(d)) return "—";
  const kind = d > 0 ? "up" : d < 0 ? "down" : "flat";
  return h("span", { class: `delta delta-${kind}` }, `${d > 0 ? "+" : ""}${fixed(d)}`);
}

async function loadCollection() {
  const c = await api(`/v1/collections/${encodeURIComponent(name)}`);
  $("#summary-line").textContent = `${plural(c.documents, "document")} · ${plural(c.chunks, "chunk")} · created ${when(c.created_at)}`;
  clear(
    $("#settings"),
    kv({ embedding_model: c.embedding_model, dimension: c.dimension, embedding_precision: c.embedding_precision }),
    kv(c, { skip: ["object", "name", "documents", "chunks", "created_at", "embedding_model", "dimension", "embedding_precision", "tuning", "tuned", "tuning_result"] }),
  );
  renderTuning(tuningOf(c));
  return c;
}

async function uploadFiles(files) {
  const error = $("#upload-error");
  showError(error, null);
  let metadata = $("#upload-metadata").value.trim();
  if (metadata) {
    try {
      const parsed = JSON.parse(metadata);
      if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("not an object");
    } catch {
      showError(error, { message: "Metadata must be a JSON object, e.g. {\"team\": \"support\"}.", param: "metadata" });
      return;
    }
  } else {
    metadata = "";
  }
  for (const file of files) {
    const bar = h("progress", { max: "1", value: "0", "aria-label": `Upload of ${file.name}` });
    const status = h("span", { class: "muted small" }, "uploading…");
    const item = h("li", { class: "upload", "data-file": file.name }, h("div", { class: "upload-head" }, h("code", { class: "break" }, file.name), h("span", { class: "muted small" }, bytes(file.size))), bar, status);
    $("#uploads").prepend(item);
    const form = new FormData();
    form.append("file", file, file.name);
    if (metadata) form.append("metadata", metadata);
    try {
      const result = await upload(`/v1/collections/${encodeURIComponent(name)}/documents`, form, {
        onProgress: (fraction, phase) => {
          bar.value = fraction;
          status.textContent = phase === "processing" ? "parsing, chunking and embedding…" : `uploading ${Math.round(fraction * 100)} %`;
        },
      });
      bar.value = 1;
      item.classList.add("is-done");
      status.textContent = `${plural(result.documents, "document")}: ${plural(result.chunks_added, "chunk")} added, ${result.chunks_unchanged} unchanged, ${result.chunks_removed} removed in ${fixed(result.seconds, 2)} s`;
      if (!file.name.toLowerCase().endsWith(".jsonl")) rememberDoc(file.name);
    } catch (err) {
      item.classList.add("is-failed");
      status.textContent = `${err.message}`;
      status.classList.add("form-error");
    }
  }
  renderDocs();
  await loadCollection();
}

async function deleteDoc(id) {
  const error = $("#delete-doc-error");
  showError(error, null);
  try {
    const result = await api(`/v1/collections/${encodeURIComponent(name)}/documents/${encodeURIComponent(id)}`, { method: "DELETE" });
    toast(`Deleted ${id} (${result.chunks_removed} chunks).`, "ok");
    forgetDoc(id);
    renderDocs();
    await loadCollection();
  } catch (err) {
    if (err.status === 404) forgetDoc(id);
    renderDocs();
    showError(error, err);
  }
}

function scoreBars(hit, maxima) {
  return h(
    "dl",
    { class: "scores" },
    STAGES.map(([key, label]) => {
      const value = hit.scores?.[key];
      const width = value === undefined || value === null || !maxima[key] ? 0 : Math.max(2, (Math.max(0, value) / maxima[key]) * 100);
      return h(
        "div",
        { class: `score score-${key}`, "data-stage": key },
        h("dt", {}, label),
        h("dd", {}, h("span", { class: "score-bar", "aria-hidden": "true" }, h("span", { class: "score-fill", style: `width:${width}%` })),
          h("span", { class: "score-value" }, value === undefined || value === null ? "—" : fixed(value, 4))),
      );
    }),
  );
}

function renderHits(response, query) {
  const terms = queryTerms(query);
  const maxima = {};
  for (const [key] of STAGES) maxima[key] = Math.max(0, ...response.data.map((hit) => hit.scores?.[key] ?? 0));
  clear(
    $("#hits"),
    h("p", { class: "muted small" }, `${plural(response.data.length, "hit")} · mode ${response.mode}`),
    response.data.length
      ? h(
          "ol",
          { class: "hits" },
          response.data.map((hit, i) =>
            h(
              "li",
              { class: "hit", "data-document": hit.document_id, "data-chunk": hit.chunk_id },
              h(
                "header",
                { class: "hit-head" },
                h("span", { class: "hit-rank" }, `#${i + 1}`),
                h("code", { class: "break strong" }, hit.document_id),
                h("span", { class: "muted small" }, `chunk ${hit.index} · chars ${hit.start}–${hit.end}`),
                h("span", { class: "hit-score" }, `score ${fixed(hit.score, 4)}`),
              ),
              scoreBars(hit, maxima),
              h("p", { class: "hit-text" }, highlighted(hit.text, terms)),
              h(
                "footer",
                { class: "hit-foot" },
                h("div", { class: "chips" }, Object.entries(hit.metadata || {}).filter(([, v]) => typeof v !== "object").map(([k, v]) => chip(`${k}: ${v}`))),
                h("button", { type: "button", class: "btn btn-sm btn-danger", "data-admin": true, onclick: () => deleteDoc(hit.document_id).then(() => search()) }, "Delete document"),
              ),
            ),
          ),
        )
      : h("p", { class: "empty" }, "No passage matched."),
  );
}

async function search() {
  const query = $("#q").value.trim();
  const error = $("#search-error");
  if (!query) return showError(error, { message: "Type a query.", param: "query" });
  showError(error, null);
  const body = { collection: name, query, top_k: Number($("#q-k").value) || 5 };
  if ($("#q-mode").value) body.mode = $("#q-mode").value;
  if ($("#q-rerank").value) body.rerank = $("#q-rerank").value === "true";
  try {
    renderHits(await api("/v1/retrieve", { method: "POST", json: body }), query);
  } catch (err) {
    clear($("#hits"));
    showError(error, err);
  }
}

boot(async () => {
  $("#refresh").addEventListener("click", loadCollection);
  const zone = $("#dropzone");
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (e) => {
      e.preventDefault();
      zone.classList.add("is-over");
    });
  }
  for (const type of ["dragleave", "drop"]) zone.addEventListener(type, () => zone.classList.remove("is-over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    const files = [...(e.dataTransfer?.files || [])];
    if (files.length) uploadFiles(files);
  });
  $("#upload-files").addEventListener("change", (e) => {
    const files = [...e.target.files];
    e.target.value = "";
    if (files.length) uploadFiles(files);
  });
  $("#upload-form").addEventListener("submit", (e) => e.preventDefault());
  $("#search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    search();
  });
  $("#delete-doc-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("#doc-id").value.trim();
    if (!id) return showError($("#delete-doc-error"), { message: "Enter a document id.", param: "document_id" });
    deleteDoc(id).then(() => ($("#doc-id").value = ""));
  });
  renderDocs();
  try {
    await loadCollection();
  } catch (err) {
    $("#summary-line").textContent = err.message;
    $("#summary-line").classList.add("form-error");
  }
});
