// Chat playground: streams POST /v1/chat/completions (SSE) for the base model, an adapter, a pinned version or an
// alias, optionally grounded in a collection (the `rag` extension); shows the version that answered, token counts,
// time to first token and latency, and the citations as numbered links that open the cited chunk.

import { api, streamChat } from "../api.js";
import { $, clear, fixed, h, kv, num, plural, seconds, wireCloseButtons } from "../dom.js";
import { highlighted, modelCatalog, queryTerms } from "../shared.js";
import { boot } from "../shell.js";

let catalog = null;
let history = [];
let controller = null;

function modelOptions() {
  const select = $("#model");
  const previous = select.value;
  const latestLabel = (name) => `${name} → ${catalog.latest(name) ?? "?"}`;
  const aliasLabel = (a) => `${a.alias} → ${Array.isArray(a.targets) ? a.targets.map((t) => `${t.target ?? t.model} ${t.weight} %`).join(", ") : a.target}`;
  clear(
    select,
    catalog.base ? h("optgroup", { label: "Base model" }, h("option", { value: catalog.base }, catalog.base)) : null,
    catalog.aliases.length ? h("optgroup", { label: "Aliases" }, catalog.aliases.map((a) => h("option", { value: a.alias }, aliasLabel(a)))) : null,
    catalog.names.length ? h("optgroup", { label: "Adapters (latest version)" }, catalog.names.map((n) => h("option", { value: n }, latestLabel(n)))) : null,
    catalog.versions.length ? h("optgroup", { label: "Pinned versions" }, catalog.versions.map((v) => h("option", { value: v.model }, v.model))) : null,
  );
  const wanted = new URLSearchParams(location.search).get("model");
  select.value = [previous, wanted].find((v) => v && catalog.ids.includes(v)) || catalog.base;
  describeModel();
}

function describeModel() {
  if (!catalog) return;
  const model = $("#model").value;
  const concrete = catalog.resolve(model);
  $("#model-help").textContent =
    model === catalog.base ? "The base model, no adapter." : concrete ? `Requests go to ${concrete} now.` : "Resolved by the gateway per request.";
}

async function loadCollections() {
  const select = $("#rag-collection");
  const previous = select.value;
  try {
    const collections = (await api("/v1/collections")).data;
    clear(select, collections.length ? collections.map((c) => h("option", { value: c.name }, `${c.name} (${plural(c.documents, "doc")})`)) : h("option", { value: "" }, "No collection yet"));
    if (collections.some((c) => c.name === previous)) select.value = previous;
    $("#rag").disabled = !collections.length;
  } catch (err) {
    clear(select, h("option", { value: "" }, "Retrieval unavailable"));
    $("#rag").disabled = true;
    $("#rag").title = err.message;
  }
}

function syncRag() {
  const on = $("#rag").checked;
  for (const id of ["#rag-collection", "#rag-topk", "#rag-mode"]) $(id).disabled = !on;
}

function bubble(role, ...children) {
  $("#empty")?.remove();
  const el = h("article", { class: `msg msg-${role}`, "data-role": role }, children);
  $("#conversation").append(el);
  el.scrollIntoView({ block: "end" });
  return el;
}

// ctx: {collection, question} of the turn that cited it (the question's words are marked in the chunk).
function openCitation(citation, ctx) {
  const { collection, question } = ctx;
  const body = $("#citation-body");
  $("#citation-title").textContent = `[${citation.source}] ${citation.document_id}`;
  clear(
    body,
    h("p", { class: "muted small" },
      `chunk ${citation.chunk_id} · characters ${citation.start}–${citation.end}${collection ? ` · collection ${collection}` : ""}`),
    h("blockquote", { class: "chunk-text", "data-chunk": citation.chunk_id }, highlighted(citation.text, queryTerms(question || ""))),
    h("h3", {}, "Scores"),
    kv({ score: citation.score, ...(citation.scores || {}) }),
    Object.keys(citation.metadata || {}).length ? [h("h3", {}, "Metadata"), kv(citation.metadata)] : null,
    collection ? h("p", {}, h("a", { href: `/ui/collections/${encodeURIComponent(collection)}` }, `Open ${collection}`)) : null,
  );
  $("#citation-dialog").showModal();
}

// The answer's text with [n] markers turned into links to citation n.
function linkified(text, citations, ctx) {
  if (!citations?.length) return [text];
  const out = [];
  let last = 0;
  for (const match of text.matchAll(/\[(\d+)\]/g)) {
    const citation = citations.find((c) => c.source === Number(match[1]));
    if (!citation) continue;
    out.push(text.slice(last, match.index));
    out.push(h("button", { type: "button", class: "cite", "data-cite": citation.source, "aria-label": `Source ${citation.source}: ${citation.document_id}`, onclick: () => openCitation(citation, ctx) }, `[${citation.source}]`));
    last = match.index + match[0].length;
  }
  out.push(text.slice(last));
  return out;
}

function sources(citations, ctx) {
  return h(
    "div",
    { class: "sources" },
    h("h3", { class: "sources-title" }, "Sources"),
    h(
      "ol",
      { class: "source-list" },
      citations.map((c) =>
        h("li", {},
          h("button", { type: "button", class: "cite cite-source", "data-cite": c.source, onclick: () => openCitation(c, ctx) }, `[${c.source}]`),
          " ", h("code", { class: "break" }, c.document_id), h("span", { class: "muted small" }, ` · chars ${c.start}–${c.end} · score ${fixed(c.score, 3)}`)),
      ),
    ),
  );
}

function setBusy(busy) {
  $("#send").disabled = busy;
  $("#stop").disabled = !busy;
  $("#model").disabled = busy;
}

async function send(text) {
  const model = $("#model").value;
  const rag = $("#rag").checked && $("#rag-collection").value
    ? { collection: $("#rag-collection").value, top_k: Number($("#rag-topk").value) || 3, mode: $("#rag-mode").value }
    : null;
  const concreteAtSend = catalog.resolve(model);
  history.push({ role: "user", content: text });
  bubble("user", h("div", { class: "msg-body" }, text));

  const content = h("div", { class: "msg-body", "data-streaming": "true" });
  const who = h("span", { class: "msg-model" }, h("code", {}, model));
  const meta = h("div", { class: "msg-meta muted small" }, "waiting for the first token…");
  const item = bubble("assistant", h("header", { class: "msg-head" }, who, rag ? h("span", { class: "badge badge-info" }, `RAG · ${rag.collection} · top ${rag.top_k}`) : null), content, meta);

  const messages = [];
  if ($("#system").value.trim()) messages.push({ role: "system", content: $("#system").value.trim() });
  messages.push(...history);
  const body = {
    model,
    messages,
    temperature: Number($("#temperature").value),
    max_tokens: Number($("#max-tokens").value) || 128,
    stream_options: { include_usage: true },
  };
  if (rag) body.rag = rag;

  controller = new AbortController();
  setBusy(true);
  const started = performance.now();
  let firstAt = null;
  let text_ = "";
  let usage = null;
  let citations = null;
  let served = null;
  let chunks = 0;
  let stopped = false;
  try {
    await streamChat(body, {
      signal: controller.signal,
      onChunk: (chunk) => {
        if (chunk.model) served = chunk.model;
        if (chunk.usage) usage = chunk.usage;
        if (chunk.citations) citations = chunk.citations;
        const delta = chunk.choices?.[0]?.delta?.content;
        if (delta) {
          if (firstAt === null) {
            firstAt = performance.now();
            meta.textContent = "streaming…";
          }
          chunks += 1;
          text_ += delta;
          content.append(delta);
          content.dataset.chunks = String(chunks);
          item.scrollIntoView({ block: "end" });
        }
      },
    });
  } catch (err) {
    if (err.name === "AbortError") stopped = true;
    else {
      content.append(h("p", { class: "form-error", role: "alert" }, `${err.message}${err.param ? ` (${err.param})` : ""}`));
    }
  } finally {
    setBusy(false);
    controller = null;
  }
  const total = (performance.now() - started) / 1000;
  content.dataset.streaming = "false";
  if (text_) history.push({ role: "assistant", content: text_ });
  // The gateway names the version when it resolves one itself (weighted aliases); else what `model` meant at send time.
  const concrete = served && (served.includes("@") || served === catalog.base) && served !== model ? served : concreteAtSend;
  clear(who, h("code", {}, model), concrete && concrete !== model ? [" → ", h("code", { class: "concrete", "data-concrete": concrete }, concrete)] : null);
  if (concrete === model) who.querySelector("code").dataset.concrete = concrete;
  if (citations?.length) {
    const ctx = { collection: rag?.collection, question: text };
    clear(content, linkified(text_, citations, ctx));
    content.dataset.chunks = String(chunks);
    item.append(sources(citations, ctx));
  } else if (rag) {
    item.append(h("p", { class: "muted small" }, "No passage was retrieved for this question."));
  }
  const ttft = firstAt === null ? null : (firstAt - started) / 1000;
  const decode = firstAt === null ? null : total - ttft;
  const parts = [];
  if (usage) parts.push(`${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens`);
  if (ttft !== null) parts.push(`TTFT ${seconds(ttft)}`);
  parts.push(`total ${seconds(total)}`);
  if (usage && decode) parts.push(`${num(usage.completion_tokens / decode, 1)} tok/s`);
  if (stopped) parts.push("stopped");
  clear(meta, parts.join(" · "));
  meta.dataset.done = "true";
}

boot(async () => {
  wireCloseButtons();
  // Adapters, aliases and collections made in another tab show up when this one is looked at again.
  document.addEventListener("visibilitychange", async () => {
    if (document.hidden || controller) return;
    catalog = await modelCatalog();
    modelOptions();
    await loadCollections();
  });
  $("#model").addEventListener("change", describeModel);
  $("#rag").addEventListener("change", syncRag);
  $("#new-chat").addEventListener("click", () => {
    controller?.abort();
    history = [];
    clear($("#conversation"), h("p", { class: "empty", id: "empty" }, "Ask something. Answers stream in as the model writes them."));
    $("#message").focus();
  });
  $("#stop").addEventListener("click", () => controller?.abort());
  const composer = $("#composer");
  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("#message").value.trim();
    if (!text || controller || !catalog) return;
    $("#message").value = "";
    send(text);
  });
  $("#message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });
  // Listeners first, data second: a choice made while the lists load is not lost.
  catalog = await modelCatalog();
  modelOptions();
  await loadCollections();
  syncRag();
});
