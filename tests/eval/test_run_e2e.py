"""``ragswap eval run|compare|report`` end to end against a real gateway serving SmolLM2 with a real collection."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from ragswap.cli import app
from tests.conftest import Gateway

pytestmark = pytest.mark.engine

DOCS = [
    {"id": "paris", "text": "Paris is the capital and largest city of France."},
    {"id": "berlin", "text": "Berlin is the capital of Germany."},
    {"id": "bananas", "text": "Bananas are yellow fruits rich in potassium."},
]
ROWS = [
    {"question": "What is the capital of France?", "reference": "Paris.", "reference_context_ids": ["paris"]},
    {"question": "What colour are bananas?", "reference": "Yellow.", "reference_context_ids": ["bananas"]},
]


@pytest.fixture(scope="module")
def collection(gateway: Gateway) -> str:
    name = "eval-e2e"
    headers = gateway.headers(admin=True)
    created = httpx.post(f"{gateway.url}/v1/collections", json={"name": name}, headers=headers, timeout=120)
    assert created.status_code in (201, 409), created.text
    ingest = httpx.post(
        f"{gateway.url}/v1/collections/{name}/documents",
        json={"documents": DOCS},
        headers=headers,
        timeout=300,
    )
    assert ingest.status_code == 200, ingest.text
    return name


def test_run_compare_report(
    gateway: Gateway, collection: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in {
        "GENERATION_MAX_TOKENS": "24",
        "JUDGE_MAX_TOKENS": "160",
        "JUDGE_MAX_ITEMS": "3",
        "JUDGE_MAX_CHARS": "100",
        "CACHE_DIR": str(tmp_path / "cache"),
        "BOOTSTRAP_SAMPLES": "200",
    }.items():
        monkeypatch.setenv(f"RAGSWAP_EVAL__{key}", value)
    dataset = tmp_path / "rag.jsonl"
    dataset.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    run_dir = tmp_path / "run"
    runner = CliRunner()
    args = ["eval", "run", "--dataset", str(dataset), "--collection", collection, "--top-k", "2"]
    args += ["--retrieval-mode", "dense", "--retrieval-mode", "sparse", "--server", gateway.url]
    args += ["--api-key", gateway.api_key, "--out", str(run_dir)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    # The judge was checked first (the real SmolLM2 through the gateway), then the paired verdict of the two modes.
    assert "judge check: smollm2-135m-instruct" in result.output
    assert (
        "verdict smollm2-135m-instruct/sparse vs smollm2-135m-instruct/dense (2 paired samples)"
        in result.output
    )
    assert "samples/min" in result.output and "judge window 8192 tokens (/v1/models)" in result.output

    summary = json.loads((run_dir / "summary.json").read_text())
    configs = ["smollm2-135m-instruct/dense", "smollm2-135m-instruct/sparse"]
    assert sorted(summary["results"]) == configs
    assert summary["judge"]["model"] == "smollm2-135m-instruct" and summary["judge"]["url"] == gateway.url
    traces = [json.loads(line) for line in (run_dir / "traces.jsonl").read_text().splitlines()]
    assert len(traces) == 4
    for trace in traces:
        assert trace["error"] is None and trace["answer"]
        assert 1 <= len(trace["retrieved"]) <= 2 and all(
            c["text"] and c["doc_id"] for c in trace["retrieved"]
        )
        assert isinstance(trace["citations"], list)
        for name, score in trace["scores"].items():
            # Every metric either scored (a value in range) or says why not; never a silent NaN or 0.
            assert score["status"] in ("ok", "failed"), (name, score)
            assert (score["value"] is not None) == (score["status"] == "ok")
            if score["status"] == "failed":
                assert score["reason"]
        # IR metrics are exact given what was retrieved.
        ranked = list(dict.fromkeys(c["doc_id"] for c in trace["retrieved"]))
        relevant = set(trace["reference_context_ids"])
        hit = next((i for i, d in enumerate(ranked) if d in relevant), None)
        assert trace["scores"]["mrr"]["value"] == (0.0 if hit is None else 1 / (hit + 1))
        assert trace["scores"]["recall"]["value"] == (0.0 if hit is None else 1.0)
        judged = trace["scores"]["faithfulness"]
        assert judged["judge_calls"] and all(c["raw"] is not None for c in judged["judge_calls"])
    for config in configs:
        for metric, stats in summary["results"][config].items():
            assert stats["n_ok"] + stats["n_failed"] == 2, (config, metric)
            if stats["n_ok"]:
                assert stats["ci_low"] <= stats["mean"] <= stats["ci_high"]

    check = summary["judge_check"]
    assert check["model"] == "smollm2-135m-instruct" and sorted(check["metrics"]) == sorted(
        ["faithfulness", "answer_relevancy", "context_precision", "context_recall"]
    )
    for name, agreement in check["metrics"].items():
        # The figures, whatever they are: agreement with its 95 % interval on every item of the metric.
        assert (
            agreement["n"] >= 16
            and 0 <= agreement["ci_low"] <= agreement["agreement"] <= agreement["ci_high"]
        )
        assert agreement["reliable"] == (agreement["ci_low"] > 0.5)
        for config in configs:
            assert summary["results"][config][name]["judge"] == agreement
    (comparison,) = summary["comparisons"]
    assert (comparison["baseline"], comparison["candidate"]) == tuple(configs)
    assert {d["metric"] for d in comparison["deltas"]} == set(summary["metrics"])
    assert summary["context_overflow_failures"] == 0 and summary["samples_per_minute"] > 0

    html = (run_dir / "report.html").read_text()
    assert "Judge check" in html and "Paired comparison" in html
    for agreement in check["metrics"].values():
        assert f"{agreement['agreement']:.2f}" in html
    assert html.count("data:image/png;base64,") == 2
    assert all(c in html for c in configs) and "Worst samples" in html

    compared = runner.invoke(app, ["eval", "compare", str(run_dir), str(run_dir)])
    assert compared.exit_code == 0, compared.output
    assert "+0.000" in compared.output and "faithfulness" in compared.output
    (run_dir / "report.html").unlink()
    rebuilt = runner.invoke(app, ["eval", "report", str(run_dir)])
    assert rebuilt.exit_code == 0 and (run_dir / "report.html").is_file()


def test_cli_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "ok"}\n{"question": 3}\n')
    result = CliRunner().invoke(app, ["eval", "run", "--dataset", str(bad)])
    assert result.exit_code == 2 and "bad.jsonl:2" in result.output
    missing = CliRunner().invoke(app, ["eval", "compare", str(tmp_path), str(tmp_path)])
    assert missing.exit_code == 2 and "not a run directory" in missing.output
