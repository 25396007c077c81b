// Overview: replicas (GET /v1/replicas), readiness (GET /ready), adapters (GET /v1/adapters) and traffic per model
// (GET /v1/metrics/summary), refreshed every few seconds while the tab is visible.

import { api } from "../api.js";
import { $, ago, badge, chip, clear, every, h, lineChart, num, pct, seconds, stateBadge, table } from "../dom.js";
import { boot } from "../shell.js";

const REFRESH_MS = 5000;

function stat(label, value, detail = "", kind = "") {
  return h(
    "div",
    { class: `stat ${kind ? `stat-${kind}` : ""}` },
    h("div", { class: "stat-label" }, label),
    h("div", { class: "stat-value" }, value),
    h("div", { class: "stat-detail muted" }, detail),
  );
}

function renderStats(ready, replicas, adapters, summary) {
  const readyCount = replicas.filter((r) => r.state === "ready").length;
  const names = new Set(adapters.map((a) => a.name));
  const all = summary.overall;
  const errorKind = all.error_rate === null ? "" : all.error_rate > 0.05 ? "bad" : all.error_rate > 0 ? "warn" : "ok";
  clear(
    $("#stats"),
    stat("Gateway", ready.status === "ready" ? "Ready" : "Not ready", `${readyCount} of ${replicas.length} replicas ready`, ready.status === "ready" ? "ok" : "bad"),
    stat("Adapters", String(adapters.length), `${names.size} name${names.size === 1 ? "" : "s"}, all versions`),
    stat("Requests", `${num(all.requests_per_s, 2)}/s`, `${all.requests} in window · ${all.total_requests} since start`),
    stat("Error rate", pct(all.error_rate), `${all.errors} failed in window`, errorKind),
    stat("Latency p95", seconds(all.latency_s.p95), `p50 ${seconds(all.latency_s.p50)} · end to end`),
    stat("TTFT p95", seconds(all.ttft_s.p95), `p50 ${seconds(all.ttft_s.p50)} · streaming requests`),
  );
}

function renderTraffic(summary) {
  const chart = $("#traffic-chart");
  const points = summary.series;
  if (points.length < 2) {
    clear(chart, h("p", { class: "empty" }, "Collecting samples… the chart fills in as the gateway samples its metrics."));
  } else {
    clear(
      chart,
      lineChart(points, [
        { key: "requests_per_s", class: "s-primary" },
        { key: "errors_per_s", class: "s-bad" },
      ]),
      h(
        "div",
        { class: "legend" },
        h("span", { class: "legend-item s-primary" }, "requests/s"),
        h("span", { class: "legend-item s-bad" }, "errors/s"),
        h("span", { class: "muted" }, `peak ${num(Math.max(...points.map((p) => p.requests_per_s)), 2)}/s`),
      ),
    );
  }
  $("#traffic-note").textContent = `last ${seconds(summary.window_s)} · sampled every ${summary.interval_s} s`;
}

function adapterChips(list, failed) {
  const chips = list.map((name) => chip(name));
  for (const [name, reason] of Object.entries(failed || {})) {
    chips.push(chip(`${name} failed`, "chip-bad", reason));
  }
  return chips.length ? h("div", { class: "chips" }, chips) : h("span", { class: "muted" }, "none");
}

function renderReplicas(replicas) {
  clear(
    $("#replicas"),
    table(
      [
        { label: "Replica", render: (r) => h("strong", {}, `#${r.replica}`) },
        { label: "State", render: (r) => stateBadge(r.state, r.error) },
        { label: "Healthy", render: (r) => (r.healthy ? "yes" : "no") },
        { label: "Ready", render: (r) => (r.ready ? "yes" : "no") },
        { label: "In flight", render: (r) => String(r.outstanding), class: "num" },
        { label: "Restarts", render: (r) => String(r.restarts), class: "num" },
        { label: "Kind", render: (r) => (r.embedded ? "embedded" : "external") },
        { label: "URL", render: (r) => h("code", { class: "break" }, r.url) },
        { label: "Adapters loaded", render: (r) => adapterChips(r.adapters, r.failed_adapters), class: "wide" },
      ],
      replicas,
      { empty: "No engine replica is configured.", rowAttrs: (r) => ({ "data-replica": r.replica, "data-state": r.state }) },
    ),
  );
  const bad = replicas.filter((r) => r.error);
  $("#ready-note").textContent = bad.length ? `last error: ${bad[0].error}` : "";
}

function renderModels(summary) {
  clear(
    $("#models"),
    table(
      [
        { label: "Model", render: (m) => h("code", {}, m.model) },
        { label: "Requests", render: (m) => String(m.requests), class: "num" },
        { label: "Req/s", render: (m) => num(m.requests_per_s, 3), class: "num" },
        { label: "Error rate", render: (m) => (m.error_rate ? badge(pct(m.error_rate), m.error_rate > 0.05 ? "bad" : "warn") : pct(m.error_rate)), class: "num" },
        { label: "p50 latency", render: (m) => seconds(m.latency_s.p50), class: "num" },
        { label: "p95 latency", render: (m) => seconds(m.latency_s.p95), class: "num" },
        { label: "p50 TTFT", render: (m) => seconds(m.ttft_s.p50), class: "num" },
        { label: "p95 TTFT", render: (m) => seconds(m.ttft_s.p95), class: "num" },
        { label: "Tokens/s", render: (m) => num(m.completion_tokens_per_s, 1), class: "num" },
        { label: "Since start", render: (m) => `${m.total_requests} req · ${m.total_errors} err`, class: "num" },
      ],
      summary.models,
      { empty: "No inference request yet. Try the chat playground.", rowAttrs: (m) => ({ "data-model": m.model }) },
    ),
  );
}

boot(async () => {
  const windowSelect = $("#window");
  let generatedAt = null;
  const refresh = async () => {
    const windowS = windowSelect.value;
    const [ready, replicas, adapters, summary] = await Promise.all([
      fetch("/ready").then((r) => r.json()),
      api("/v1/replicas"),
      api("/v1/adapters"),
      api(`/v1/metrics/summary?window_s=${windowS}`),
    ]);
    renderStats(ready, replicas.data, adapters.data, summary);
    renderTraffic(summary);
    renderReplicas(replicas.data);
    renderModels(summary);
    generatedAt = summary.generated_at;
    $("#live-text").textContent = `Live · updated ${ago(generatedAt)}`;
    $("#live").classList.add("is-live");
  };
  const tick = async () => {
    try {
      await refresh();
    } catch (err) {
      $("#live").classList.remove("is-live");
      $("#live-text").textContent = `Update failed: ${err.message}`;
    }
  };
  windowSelect.addEventListener("change", tick);
  every(REFRESH_MS, tick);
  setInterval(() => generatedAt && ($("#live-text").textContent = `Live · updated ${ago(generatedAt)}`), 1000);
});
