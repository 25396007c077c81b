// One evaluation job: live status and progress (GET /v1/evaluations/{id}), cancel, the results table
// (GET .../results) and the HTML report (GET .../report, fetched with the key, shown in a sandboxed frame).

import { api } from "../api.js";
import { $, clear, confirmDialog, every, fixed, h, kv, seconds, stateBadge, table, toast, when } from "../dom.js";
import { boot } from "../shell.js";

const jobId = document.getElementById("main").dataset.job;
const FINAL = new Set(["succeeded", "failed", "cancelled"]);
const MAX_REPORT_PX = 2400;
let reportHtml = null;

function renderStatus(job) {
  const { done, total } = job.progress;
  $("#job-line").textContent = `${job.name} · ${job.configs.length} config${job.configs.length === 1 ? "" : "s"} · created ${when(job.created_at)}`;
  clear(
    $("#status"),
    h(
      "div",
      { class: "status-row" },
      stateBadge(job.status),
      h("progress", { max: String(total || 1), value: String(done), "aria-label": "Progress", class: "progress-lg" }),
      h("span", { class: "muted" }, `${done} / ${total} samples`),
    ),
    job.error ? h("p", { class: "form-error" }, job.error) : null,
    kv({
      configs: job.configs,
      metrics: job.metrics,
      started: job.started_at ? when(job.started_at) : null,
      finished: job.finished_at ? when(job.finished_at) : null,
      duration: job.started_at ? seconds((job.finished_at || Date.now() / 1000) - job.started_at) : null,
      resumed: job.resumed || null,
    }),
  );
  $("#cancel").hidden = FINAL.has(job.status);
}

function renderSummary(summary) {
  const configs = Object.keys(summary.results);
  const cell = (config, metric) => {
    const s = summary.results[config][metric];
    if (!s) return "—";
    return h(
      "span",
      { class: "metric-cell" },
      h("strong", {}, fixed(s.mean)),
      s.ci_low !== null && s.ci_low !== undefined ? h("span", { class: "muted small" }, ` [${fixed(s.ci_low)}, ${fixed(s.ci_high)}]`) : null,
      h("span", { class: `small ${s.n_failed ? "text-bad" : "muted"}` }, ` · ${s.n_ok} ok${s.n_failed ? `, ${s.n_failed} failed` : ""}`),
    );
  };
  clear(
    $("#summary"),
    table(
      [{ label: "Metric", render: (m) => h("code", {}, m) }, ...configs.map((c) => ({ label: c, render: (m) => cell(c, m) }))],
      summary.metrics,
      { rowAttrs: (m) => ({ "data-metric": m }) },
    ),
    h("p", { class: "muted small" }, `${summary.n_samples} samples of ${summary.dataset} · judge ${summary.judge.model || "—"} · ${summary.judge_calls} judge calls, ${summary.judge_failures} failed · ${seconds(summary.seconds)}`),
  );
  $("#summary-card").hidden = false;
}

async function showReport() {
  const resp = await api(`/v1/evaluations/${encodeURIComponent(jobId)}/report`, { raw: true });
  reportHtml = await resp.text();
  const frame = $("#report");
  // The frame may not run scripts (sandbox without allow-scripts); same origin only so that it can be sized to fit.
  frame.addEventListener("load", () => {
    const doc = frame.contentDocument;
    if (doc) frame.style.height = `${Math.min(MAX_REPORT_PX, doc.documentElement.scrollHeight + 8)}px`;
  });
  frame.srcdoc = reportHtml;
  $("#report-card").hidden = false;
  $("#download").hidden = false;
}

boot(async () => {
  $("#download").addEventListener("click", () => {
    const url = URL.createObjectURL(new Blob([reportHtml], { type: "text/html" }));
    const link = h("a", { href: url, download: `report-${jobId}.html` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 5000);
  });
  $("#cancel").addEventListener("click", async () => {
    $("#cancel-text").textContent = `Cancel ${jobId}? Samples scored so far are kept; the job does not resume.`;
    const ok = await confirmDialog($("#cancel-dialog"));
    if (!ok) return;
    try {
      await api(`/v1/evaluations/${encodeURIComponent(jobId)}/cancel`, { method: "POST" });
      toast(`Cancelled ${jobId}.`, "ok");
    } catch (err) {
      toast(err.message, "error");
    }
  });
  let finished = false;
  const stop = every(1500, async () => {
    if (finished) return;
    let job;
    try {
      job = await api(`/v1/evaluations/${encodeURIComponent(jobId)}`);
    } catch (err) {
      clear($("#status"), h("p", { class: "form-error" }, err.message));
      finished = true;
      return;
    }
    renderStatus(job);
    if (!FINAL.has(job.status)) return;
    finished = true;
    stop();
    if (job.status === "succeeded") {
      const results = await api(`/v1/evaluations/${encodeURIComponent(jobId)}/results`);
      renderSummary(results.summary);
      await showReport();
    }
  });
});
