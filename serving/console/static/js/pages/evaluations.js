// Evaluations: jobs with live progress (GET /v1/evaluations), cancel (POST .../cancel), start one
// (POST /v1/evaluations) from JSONL rows, and pick two finished runs to compare.

import { api } from "../api.js";
import { $, $$, chip, clear, plural, confirmDialog, every, h, seconds, showError, stateBadge, table, toast, when } from "../dom.js";
import { modelCatalog } from "../shared.js";
import { boot } from "../shell.js";

const FINAL = new Set(["succeeded", "failed", "cancelled"]);
let jobs = [];
const selected = new Set();

function progress(job) {
  const { done, total } = job.progress;
  const fraction = total ? done / total : 0;
  return h(
    "div",
    { class: "progress" },
    h("progress", { max: String(total || 1), value: String(done), "aria-label": `Progress of ${job.id}` }),
    h("span", { class: "small muted" }, `${done} / ${total} · ${Math.round(fraction * 100)} %`),
  );
}

function duration(job) {
  if (!job.started_at) return "—";
  return seconds((job.finished_at || Date.now() / 1000) - job.started_at);
}

function renderJobs() {
  clear(
    $("#jobs"),
    table(
      [
        {
          label: "Compare",
          render: (j) =>
            j.status === "succeeded"
              ? h("input", { type: "checkbox", "aria-label": `Select ${j.id} for comparison`, checked: selected.has(j.id), onchange: (e) => toggle(j.id, e.target.checked) })
              : "",
        },
        {
          label: "Job",
          render: (j) =>
            h("div", { class: "stack" },
              h("a", { href: `/ui/evaluations/${encodeURIComponent(j.id)}`, class: "strong" }, j.name),
              h("span", { class: "mono small muted" }, j.id)),
        },
        { label: "Status", render: (j) => stateBadge(j.status, j.error) },
        { label: "Progress", render: progress, class: "wide" },
        { label: "Configs", render: (j) => h("div", { class: "chips" }, j.configs.map((c) => chip(c))) },
        { label: "Metrics", render: (j) => j.metrics.join(", ") },
        { label: "Created", render: (j) => when(j.created_at) },
        { label: "Duration", render: duration, class: "num" },
        {
          label: "Actions",
          render: (j) =>
            h(
              "div",
              { class: "actions" },
              j.status === "succeeded" ? h("a", { class: "btn btn-sm", href: `/ui/evaluations/${encodeURIComponent(j.id)}` }, "Report") : null,
              FINAL.has(j.status) ? null : h("button", { type: "button", class: "btn btn-sm btn-danger", onclick: () => cancel(j) }, "Cancel"),
            ),
        },
      ],
      jobs,
      { empty: "No evaluation yet. Start one below.", rowAttrs: (j) => ({ "data-job": j.id, "data-status": j.status }) },
    ),
  );
  const running = jobs.filter((j) => !FINAL.has(j.status)).length;
  $("#live-text").textContent = running ? `${running} running · live` : "All jobs finished";
  $("#live").classList.toggle("is-live", running > 0);
}

function toggle(id, on) {
  if (on) selected.add(id);
  else selected.delete(id);
  while (selected.size > 2) selected.delete(selected.values().next().value);
  $("#compare-selected").disabled = selected.size !== 2;
  renderJobs();
}

async function cancel(job) {
  $("#cancel-text").textContent = `Cancel ${job.name} (${job.id})? Samples scored so far are kept; the job does not resume.`;
  if (!(await confirmDialog($("#cancel-dialog")))) return;
  try {
    await api(`/v1/evaluations/${encodeURIComponent(job.id)}/cancel`, { method: "POST" });
    toast(`Cancelled ${job.id}.`, "ok");
  } catch (err) {
    toast(err.message, "error");
  }
  await load();
}

async function load() {
  jobs = (await api("/v1/evaluations")).data;
  renderJobs();
}

function parseRows(text) {
  const rows = [];
  const trimmed = text.trim();
  if (!trimmed) return rows;
  if (trimmed.startsWith("[")) return JSON.parse(trimmed);
  trimmed.split(/\r?\n/).forEach((line, i) => {
    if (!line.trim()) return;
    try {
      rows.push(JSON.parse(line));
    } catch {
      throw new Error(`line ${i + 1} is not valid JSON`);
    }
  });
  return rows;
}

async function fillChoices() {
  const catalog = await modelCatalog();
  const groups = [
    ["Base model", catalog.base ? [catalog.base] : []],
    ["Adapters (latest version)", catalog.names],
    ["Aliases", catalog.aliases.map((a) => a.alias)],
    ["Pinned versions", catalog.versions.map((v) => v.model)],
  ];
  clear(
    $("#e-models"),
    groups
      .filter(([, ids]) => ids.length)
      .map(([label, ids]) =>
        h(
          "div",
          { class: "check-group" },
          h("span", { class: "check-group-label" }, label),
          ids.map((id) =>
            h("div", { class: "check" },
              h("input", { type: "checkbox", id: `e-model-${id}`, name: "adapters", value: id, checked: id === catalog.base }),
              h("label", { for: `e-model-${id}` }, id)),
          ),
        ),
      ),
  );
  const collections = await api("/v1/collections").catch(() => ({ data: [] }));
  clear($("#e-collection"), h("option", { value: "" }, "No retrieval"), collections.data.map((c) => h("option", { value: c.name }, c.name)));
}

boot(async () => {
  $("#compare-selected").addEventListener("click", () => {
    const [a, b] = [...selected].map((id) => jobs.find((j) => j.id === id)).sort((x, y) => x.created_at - y.created_at);
    location.href = `/ui/evaluations/compare?a=${encodeURIComponent(a.id)}&b=${encodeURIComponent(b.id)}`;
  });
  $("#e-file").addEventListener("change", async (e) => {
    const file = e.target.files[0];
    if (file) $("#e-dataset").value = await file.text();
  });
  $("#eval-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = $("#eval-error");
    let dataset;
    try {
      dataset = parseRows($("#e-dataset").value);
    } catch (err) {
      return showError(error, { message: `Dataset: ${err.message}`, param: "dataset" });
    }
    if (!dataset.length) return showError(error, { message: "Add at least one dataset row (or choose a JSONL file).", param: "dataset" });
    const metrics = $$("input[name=metrics]:checked").map((el) => el.value);
    if (!metrics.length) return showError(error, { message: "Choose at least one metric.", param: "metrics" });
    const body = { name: $("#e-name").value.trim() || "console", dataset, metrics };
    const adapters = $$("input[name=adapters]:checked").map((el) => el.value);
    if (adapters.length) body.adapters = adapters;
    if ($("#e-collection").value) body.collection = $("#e-collection").value;
    const modes = $$("input[name=retrieval_modes]:checked").map((el) => el.value);
    if (modes.length) body.retrieval_modes = modes;
    if ($("#e-topk").value) body.top_k = Number($("#e-topk").value);
    if ($("#e-score-only").checked) body.score_only = true;
    showError(error, null);
    try {
      const job = await api("/v1/evaluations", { method: "POST", json: body });
      toast(`Started ${job.name} (${job.id}): ${plural(job.progress.total, "sample")} over ${plural(job.configs.length, "config")}.`, "ok");
      await load();
      $("#jobs").scrollIntoView({ behavior: "smooth", block: "start" });
    } catch (err) {
      showError(error, err);
    }
  });
  await fillChoices();
  every(() => (jobs.some((j) => !FINAL.has(j.status)) ? 1500 : 10000), load);
});
