// Compare two finished runs: GET /v1/evaluations/{a}/compare/{b} (B − A per paired config and metric).

import { api } from "../api.js";
import { $, clear, fixed, h, showError, table, when } from "../dom.js";
import { boot } from "../shell.js";

function delta(value) {
  if (value === null || value === undefined) return "—";
  const kind = value > 0 ? "up" : value < 0 ? "down" : "flat";
  return h("span", { class: `delta delta-${kind}` }, `${value > 0 ? "+" : ""}${fixed(value)}`);
}

function ci(m) {
  if (m.ci_low === null || m.ci_low === undefined) return h("span", { class: "muted" }, "—");
  return `[${fixed(m.ci_low)}, ${fixed(m.ci_high)}]`;
}

function clip(text, n = 180) {
  if (!text) return h("span", { class: "muted" }, "—");
  return h("span", { title: text }, text.length > n ? `${text.slice(0, n)}…` : text);
}

function samples(pair) {
  if (!pair.samples.length) return null;
  const metrics = pair.metrics.map((m) => m.metric);
  const score = (s, m) => {
    const a = s.scores_a[m];
    const b = s.scores_b[m];
    return h("span", { class: "metric-cell" }, `${fixed(a)} → ${fixed(b)} `, a !== null && b !== null ? delta(b - a) : null);
  };
  return h(
    "details",
    { class: "samples" },
    h("summary", {}, `Per sample (${pair.samples.length}${pair.samples_truncated ? "+" : ""})`),
    table(
      [
        { label: "Sample", render: (s) => h("div", { class: "stack" }, h("span", { class: "mono small muted" }, s.sample_id), clip(s.question, 140)) },
        ...metrics.map((m) => ({ label: m, render: (s) => score(s, m), class: "num" })),
        { label: "Answer A", render: (s) => clip(s.answer_a) },
        { label: "Answer B", render: (s) => clip(s.answer_b) },
      ],
      pair.samples,
      { rowAttrs: (s) => ({ "data-sample": s.sample_id }) },
    ),
  );
}

function render(result) {
  $("#deltas-note").textContent = result.note || "";
  $("#deltas-note").hidden = !result.note;
  clear(
    $("#deltas"),
    result.pairs.map((pair) =>
      h(
        "article",
        { class: "group", "data-pair": `${pair.config_a}|${pair.config_b}` },
        h("header", { class: "group-head" }, h("h3", {}, h("code", {}, pair.config_a), " → ", h("code", {}, pair.config_b))),
        table(
          [
            { label: "Metric", render: (m) => h("code", {}, m.metric) },
            { label: "A", render: (m) => `${fixed(m.mean_a)} (n ${m.n_a})`, class: "num" },
            { label: "B", render: (m) => `${fixed(m.mean_b)} (n ${m.n_b})`, class: "num" },
            { label: "Δ of means", render: (m) => delta(m.delta), class: "num" },
            { label: "Paired Δ", render: (m) => h("span", {}, delta(m.paired_delta), h("span", { class: "muted small" }, ` over ${m.n_pairs} pairs`)), class: "num" },
            { label: "95 % CI", render: ci, class: "num" },
            { label: "Verdict", render: (m) => m.verdict || h("span", { class: "muted" }, "—") },
          ],
          pair.metrics,
          { empty: "The runs share no metric.", rowAttrs: (m) => ({ "data-metric": m.metric }) },
        ),
        samples(pair),
      ),
    ),
  );
  $("#deltas-card").hidden = false;
}

boot(async () => {
  const compare = async () => {
    const a = $("#run-a").value;
    const b = $("#run-b").value;
    const error = $("#compare-error");
    if (!a || !b) return showError(error, { message: "Choose two runs.", param: !a ? "a" : "b" });
    if (a === b) return showError(error, { message: "Choose two different runs.", param: "b" });
    showError(error, null);
    history.replaceState(null, "", `?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`);
    try {
      render(await api(`/v1/evaluations/${encodeURIComponent(a)}/compare/${encodeURIComponent(b)}`));
    } catch (err) {
      $("#deltas-card").hidden = true;
      showError(error, err);
    }
  };
  $("#compare-form").addEventListener("submit", (e) => {
    e.preventDefault();
    compare();
  });
  const jobs = (await api("/v1/evaluations")).data.filter((j) => j.status === "succeeded");
  const option = (j) => h("option", { value: j.id }, `${j.name} · ${j.configs.join(", ")} · ${when(j.created_at)} (${j.id})`);
  const params = new URLSearchParams(location.search);
  for (const [select, key] of [[$("#run-a"), "a"], [$("#run-b"), "b"]]) {
    clear(select, h("option", { value: "" }, jobs.length ? "Choose a finished run…" : "No finished run yet"), jobs.map(option));
    if (params.get(key)) select.value = params.get(key);
  }
  if ($("#run-a").value && $("#run-b").value) await compare();
});
