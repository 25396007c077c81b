"""A misbehaving judge: failures are counted with reasons, never crashes, zeros or NaN.

``BrokenJsonJudge`` is a test double for a misbehaving judge: a real tiny HTTP server, started here, that answers
OpenAI-shaped chat completions whose content is broken JSON (what small local judges write without structured
output). Everything else is real: the openai client, ragas's metric classes, the runner, summary and report.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from eval.records import EvalSample, JudgeInfo, RunConfig
from eval.runner import RunSpec, execute_run, read_summary, read_traces
from eval.scoring import JudgeConfig, build_scorer

BROKEN = '{"statements": ["Paris is the capital", "verdict": 1,'


class BrokenJsonJudge:
    """Test double for a misbehaving judge endpoint (see module docstring); records the request bodies."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                judge.bodies.append(json.loads(self.rfile.read(length)))
                payload = {
                    "id": "chatcmpl-broken",
                    "object": "chat.completion",
                    "created": 0,
                    "model": "broken-judge",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": BROKEN},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> BrokenJsonJudge:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def broken_judge() -> Iterator[BrokenJsonJudge]:
    with BrokenJsonJudge() as judge:
        yield judge


SAMPLES = [
    EvalSample(
        id=str(i),
        question="What is the capital of France?",
        reference="Paris is the capital of France.",
        response="The capital of France is Paris.",
        retrieved_contexts=["Paris is the capital of France.", "Lyon is a city in France."],
        retrieved_context_ids=["d1", "d2"],
        reference_context_ids=["d1"],
    )
    for i in range(3)
]
JUDGED = ["faithfulness", "context_precision", "context_recall"]


def test_broken_json_is_counted_as_failed_with_reason(broken_judge: BrokenJsonJudge, tmp_path: Path) -> None:
    judge = JudgeConfig(
        url=broken_judge.url, model="broken-judge", max_retries=1, cache_dir=tmp_path / "cache"
    )
    metrics = [*JUDGED, "mrr", "id_context_precision"]
    scorer = build_scorer(metrics, judge, None)
    spec = RunSpec(
        run_id="broken",
        dataset="inline",
        samples=SAMPLES,
        configs=[RunConfig(name="given", model="-")],
        metrics=metrics,
        judge=JudgeInfo(url=judge.url, model=judge.model),
    )
    summary = asyncio.run(execute_run(spec, tmp_path / "run", scorer, None))

    for name in JUDGED:
        result = summary.results["given"][name]
        assert result.mean is None and result.ci_low is None  # not 0, not NaN
        assert (result.n_ok, result.n_failed) == (0, 3)
        (reason,) = result.failure_reasons
        assert reason.startswith("judge output is not a valid")
    # Metrics that need no judge still score.
    assert summary.results["given"]["mrr"].mean == 1.0
    assert summary.results["given"]["id_context_precision"].mean == 0.5

    traces = read_traces(tmp_path / "run")
    assert len(traces) == 3
    for trace in traces:
        score = trace.scores["faithfulness"]
        assert score.status == "failed" and score.value is None
        assert "Invalid JSON" in (score.reason or "")
        (call,) = score.judge_calls
        assert call.raw == BROKEN and call.attempts == 2 and not call.ok
    # Context precision asks once per context; every call was tried twice (one retry).
    assert summary.judge_failures == summary.judge_calls > 0
    assert len(broken_judge.bodies) == 2 * summary.judge_calls
    # Structured output on: each request carried the metric's JSON schema, bounded. Metrics run concurrently, so
    # the order of the requests is not fixed: look the statement-extraction schema up rather than take the first.
    formats = [body["response_format"] for body in broken_judge.bodies]
    assert all(fmt["type"] == "json_schema" for fmt in formats)
    statement_schemas = [
        props["statements"]
        for fmt in formats
        if "statements" in (props := fmt["json_schema"]["schema"].get("properties", {}))
    ]
    assert statement_schemas and all(schema["maxItems"] > 0 for schema in statement_schemas)
    # First attempts are greedy, retries sample a little.
    temperatures = sorted(body["temperature"] for body in broken_judge.bodies)
    assert temperatures.count(0.0) == summary.judge_calls and temperatures[-1] > 0

    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["results"]["given"]["faithfulness"]["n_failed"] == 3
    assert not any(isinstance(v, float) and math.isnan(v) for v in _floats(on_disk))
    html = (tmp_path / "run" / "report.html").read_text()
    assert "judge output is not a valid" in html and "failed=3" in html
    assert read_summary(tmp_path / "run").judge_failures == summary.judge_failures
    # Nothing parsed, so nothing was cached: a rerun asks again rather than replaying a failure.
    assert not list((tmp_path / "cache").glob("**/*.val"))


def test_unreachable_judge_fails_with_reason(tmp_path: Path) -> None:
    from tests.conftest import free_port

    judge = JudgeConfig(url=f"http://127.0.0.1:{free_port()}/v1", model="m", max_retries=0, cache_dir=None)
    scorer = build_scorer(["context_recall"], judge, None)
    from eval.records import RetrievedChunk, SampleTrace

    trace = SampleTrace(
        sample_id="0",
        config="c",
        question="q",
        answer="a",
        retrieved=[RetrievedChunk(id="d1", text="Paris is the capital of France.")],
    )
    (score,) = asyncio.run(scorer.score(SAMPLES[0], trace)).values()
    assert score.status == "failed" and score.value is None
    assert (score.reason or "").startswith("judge request failed: APIConnectionError")


def _floats(node: Any) -> Iterator[float]:
    if isinstance(node, float):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _floats(value)
    elif isinstance(node, list):
        for value in node:
            yield from _floats(value)
