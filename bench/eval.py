"""Evaluation benchmark: RAGAS throughput with the local judge, and judge failure rates with vs without
structured output, measured side by side in one run on the same samples.

Samples come from BEIR SciFact: the question asks about a claim, the retrieved context is the claim's relevant
abstract (truncated), the answer is that abstract's first sentence and the reference is the claim. The judge is
SmolLM2-135M-Instruct on vLLM (started here with ``serving.engine.EngineProcess``, or ``--judge-url``). The judge
cache is off, so every call is made.

``judge_failure_rate_*`` = judge calls that produced no valid output after all retries / judge calls.
``judge_parse_failure_rate_*`` counts only unusable output (not timeouts or HTTP errors);
``first_attempt_failure_rate_*`` counts failures before retries. ``metric_failure_rate_*`` = (sample, metric)
pairs that could not be scored / pairs.

Run: ``.venv/bin/python bench/eval.py [--samples 8] [--judge-url http://127.0.0.1:8100/v1]``
-> bench/results/eval.json
"""

# ruff: noqa: E402  (the import path is fixed up before the package imports, see below)
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# This file is named like the `eval` package: keep its folder off the import path while importing the package.
_BENCH_DIR = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p not in ("", _BENCH_DIR)]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from eval.records import EvalSample, RetrievedChunk, SampleTrace
from eval.scoring import JudgeConfig, build_scorer
from eval.settings import JUDGED_METRICS, EvalSettings
from ragswap.model_store import ModelSettings, resolve_model
from serving.engine import EngineProcess, EngineSettings

sys.path.append(_BENCH_DIR)
from _common import SHARED_DATA, machine, write_results

BASE = "smollm2-135m-instruct"


def scifact_samples(data: Path, n: int) -> list[tuple[EvalSample, SampleTrace]]:
    corpus = {}
    with (data / "corpus.jsonl").open() as fh:
        for line in fh:
            doc = json.loads(line)
            corpus[doc["_id"]] = doc
    queries = {}
    with (data / "queries.jsonl").open() as fh:
        for line in fh:
            q = json.loads(line)
            queries[q["_id"]] = q["text"]
    pairs: list[tuple[str, str]] = []
    with (data / "qrels" / "train.tsv").open() as fh:
        next(fh)
        for line in fh:
            qid, cid, _ = line.split("\t")
            if qid in queries and cid in corpus and all(q != qid for q, _ in pairs):
                pairs.append((qid, cid))
            if len(pairs) == n:
                break
    out = []
    for qid, cid in pairs:
        claim, abstract = queries[qid], corpus[cid]["text"]
        context = abstract[:600]
        answer = abstract.split(". ")[0].strip()[:300] + "."
        sample = EvalSample(
            id=qid, question=f"Is it true that {claim[0].lower()}{claim[1:]}", reference=claim
        )
        trace = SampleTrace(
            sample_id=qid,
            config="bench",
            question=sample.question,
            answer=answer,
            retrieved=[RetrievedChunk(id=cid, doc_id=cid, text=context)],
        )
        out.append((sample, trace))
    return out


async def score_all(
    judge: JudgeConfig, samples: list[tuple[EvalSample, SampleTrace]], embedding_path: Path
) -> dict[str, Any]:
    scorer = build_scorer(list(JUDGED_METRICS), judge, embedding_path)
    start = time.perf_counter()
    results = await asyncio.gather(*(scorer.score(s, t) for s, t in samples))
    seconds = time.perf_counter() - start
    assert scorer.judge is not None
    pairs = [score for result in results for score in result.values()]
    failed = [s for s in pairs if s.status == "failed"]
    reasons: dict[str, int] = {}
    for score in failed:
        key = (score.reason or "").split(" (")[0][:80]
        reasons[key] = reasons.get(key, 0) + 1
    calls = scorer.judge.calls
    return {
        "seconds": round(seconds, 1),
        "samples_per_minute": round(len(samples) / seconds * 60, 2),
        "judge_calls": calls,
        "judge_failures": scorer.judge.failures,
        "judge_failure_rate": round(scorer.judge.failures / calls, 4) if calls else None,
        "judge_parse_failure_rate": round(scorer.judge.parse_failures / calls, 4) if calls else None,
        "first_attempt_failure_rate": round(scorer.judge.first_attempt_failures / calls, 4)
        if calls
        else None,
        "metric_failure_rate": round(len(failed) / len(pairs), 4),
        "failure_reasons": reasons,
        "per_metric_ok": {m: sum(1 for r in results if r[m].status == "ok") for m in JUDGED_METRICS},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument(
        "--judge-url", default=None, help="Existing OpenAI-compatible judge (default: start one)."
    )
    parser.add_argument("--judge-model", default=BASE)
    parser.add_argument(
        "--judge-timeout",
        type=float,
        default=600.0,
        help="Per request; generous because a shared CPU is slow.",
    )
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "scifact")
    args = parser.parse_args()
    console = Console()

    models = ModelSettings()
    embedding_path = Path(resolve_model("all-minilm-l6-v2", models))
    samples = scifact_samples(args.data, args.samples)
    engine = None
    url = args.judge_url
    if url is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        engine = EngineProcess(
            EngineSettings(port=port, max_num_seqs=64), str(resolve_model(BASE, models)), BASE
        )
        engine.start()
        engine.wait_ready()
        url = f"{engine.url}/v1"
    defaults = EvalSettings()
    try:
        runs = {}
        for structured in (True, False):
            judge = JudgeConfig(
                url=url,
                model=args.judge_model,
                structured_output=structured,
                max_retries=defaults.judge_max_retries,
                max_tokens=defaults.judge_max_tokens,
                timeout_s=args.judge_timeout,
                concurrency=defaults.judge_concurrency,
                cache_dir=None,
                max_items=defaults.judge_max_items,
                max_chars=defaults.judge_max_chars,
                few_shot=list(defaults.judge_few_shot),
            )
            label = "structured" if structured else "unstructured"
            console.print(f"scoring {len(samples)} samples, {label} output ...")
            runs[label] = asyncio.run(score_all(judge, samples, embedding_path))
    finally:
        if engine is not None:
            engine.stop()

    payload = {
        "machine": machine(),
        "judge": {"model": args.judge_model, "url": url if args.judge_url else "embedded vLLM engine"},
        "dataset": f"BEIR SciFact train claims, {len(samples)} samples",
        "metrics": list(JUDGED_METRICS),
        "settings": {
            "max_retries": defaults.judge_max_retries,
            "max_tokens": defaults.judge_max_tokens,
            "concurrency": defaults.judge_concurrency,
            "timeout_s": args.judge_timeout,
            "max_items": defaults.judge_max_items,
            "max_chars": defaults.judge_max_chars,
            "few_shot": list(defaults.judge_few_shot),
        },
        "samples_per_minute": runs["structured"]["samples_per_minute"],
        "samples_per_minute_unstructured": runs["unstructured"]["samples_per_minute"],
        "judge_failure_rate_structured": runs["structured"]["judge_failure_rate"],
        "judge_failure_rate_unstructured": runs["unstructured"]["judge_failure_rate"],
        "judge_parse_failure_rate_structured": runs["structured"]["judge_parse_failure_rate"],
        "judge_parse_failure_rate_unstructured": runs["unstructured"]["judge_parse_failure_rate"],
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "runs": runs,
    }
    path = write_results("eval", payload)
    table = Table(
        "output", "samples/min", "judge calls", "failure rate", "first-attempt failures", "metric failures"
    )
    for label, run in runs.items():
        table.add_row(
            label,
            str(run["samples_per_minute"]),
            str(run["judge_calls"]),
            f"{run['judge_failure_rate']:.1%}",
            f"{run['first_attempt_failure_rate']:.1%}",
            f"{run['metric_failure_rate']:.1%}",
        )
    console.print(table)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
