// Collections: list with counts and settings (GET /v1/collections), create (POST), delete (DELETE).

import { api } from "../api.js";
import { $, badge, clear, confirmDialog, h, num, plural, showError, table, toast, when } from "../dom.js";
import { tuningOf } from "../shared.js";
import { boot } from "../shell.js";

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

function settingsLine(c) {
  const parts = [];
  if (c.chunking) parts.push(`${c.chunking.chunker || "chunks"} ${c.chunking.chunk_size ?? ""}`.trim());
  if (c.bm25) parts.push(`BM25 k1 ${c.bm25.k1} b ${c.bm25.b}`);
  return parts.join(" · ") || "—";
}

async function load() {
  let list;
  try {
    list = await api("/v1/collections");
  } catch (err) {
    clear($("#collections"), h("p", { class: "form-error" }, err.message));
    return;
  }
  const rows = list.data;
  $("#list-note").textContent = plural(rows.length, "collection");
  clear(
    $("#collections"),
    table(
      [
        { label: "Name", render: (c) => h("a", { href: `/ui/collections/${encodeURIComponent(c.name)}`, class: "strong" }, c.name) },
        { label: "Documents", render: (c) => num(c.documents, 0), class: "num" },
        { label: "Chunks", render: (c) => num(c.chunks, 0), class: "num" },
        { label: "Embedder", render: (c) => h("span", {}, h("code", { class: "break" }, c.embedding_model), ` · ${c.dimension}-d · ${c.embedding_precision}`) },
        { label: "Chunking and BM25", render: settingsLine },
        { label: "Tuned", render: (c) => (tuningOf(c) ? badge("tuned", "ok") : h("span", { class: "muted" }, "no")) },
        { label: "Created", render: (c) => when(c.created_at) },
        {
          label: "Actions",
          render: (c) =>
            h(
              "div",
              { class: "actions" },
              h("a", { class: "btn btn-sm", href: `/ui/collections/${encodeURIComponent(c.name)}` }, "Open"),
              h("button", { type: "button", class: "btn btn-sm btn-danger", "data-admin": true, onclick: () => remove(c) }, "Delete"),
            ),
        },
      ],
      rows,
      { empty: "No collection yet. Create one, then add documents to it.", rowAttrs: (c) => ({ "data-collection": c.name }) },
    ),
  );
}

async function remove(collection) {
  $("#delete-text").textContent = `Delete ${collection.name} with its ${collection.documents} documents and ${collection.chunks} chunks? This cannot be undone.`;
  if (!(await confirmDialog($("#delete-dialog")))) return;
  try {
    await api(`/v1/collections/${encodeURIComponent(collection.name)}`, { method: "DELETE" });
    toast(`Deleted ${collection.name}.`, "ok");
  } catch (err) {
    toast(err.message, "error");
  }
  await load();
}

boot(async () => {
  $("#refresh").addEventListener("click", load);
  $("#create-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = $("#create-error");
    const name = $("#c-name").value.trim();
    if (!NAME_RE.test(name)) return showError(error, { message: "Names start with a letter or digit and use letters, digits, _ - (up to 64).", param: "name" });
    const body = { name };
    if ($("#c-precision").value) body.embedding_precision = $("#c-precision").value;
    const chunking = {};
    if ($("#c-chunker").value) chunking.chunker = $("#c-chunker").value;
    if ($("#c-size").value) chunking.chunk_size = Number($("#c-size").value);
    if ($("#c-overlap").value) chunking.chunk_overlap = Number($("#c-overlap").value);
    if (Object.keys(chunking).length) body.chunking = chunking;
    showError(error, null);
    const button = event.target.querySelector("[type=submit]");
    button.disabled = true;
    try {
      const created = await api("/v1/collections", { method: "POST", json: body });
      toast(`Created ${created.name}.`, "ok");
      location.href = `/ui/collections/${encodeURIComponent(created.name)}`;
    } catch (err) {
      showError(error, err);
    } finally {
      button.disabled = false;
    }
  });
  await load();
});
