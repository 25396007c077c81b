"""Evaluation benchmark: RAGAS throughput with the local judge, context-overflow failures at the engine's window and
at a 2048-token judge window, the judge's calibration agreement, and judge failure rates with vs without
structured output, measured side by side in one run on the same samples.

Samples come from BEIR SciFact: the question asks about a claim; the retrieved contexts are the claim's relevant
abstract followed by ``--contexts - 1`` other abstracts, whole (SciFact abstracts are ~200-300 words); the
answer is the relevant abstract's first sentence and the reference is the claim. The judge is SmolLM2-135M-Instruct
on one vLLM CPU engine started here with ragswap's defaults (bf16, ``max_model_len`` 8192, LoRA on), or
``--judge-url``. The judge cache is off, so every call is made; each pass builds its own scorer.

Passes (same samples): ``structured`` (ragswap's defaults: the window the engine's ``/v1/models`` reports),
``structured_2048`` (``judge_context_tokens=2048``: passages split across calls), ``unstructured`` (prompt-only
JSON, skipped with ``--skip-unstructured``), then the judge check on the calibration set (all four metrics).

``samples_per_minute`` = samples scored with the four judged metrics per minute (``structured`` pass);
``context_overflow_failures`` = (sample, metric) pairs that failed because a prompt did not fit the judge's window,
over the two structured passes; ``judge_failure_rate_*`` = judge calls with no valid output after all retries /
judge calls; ``judge_parse_failure_rate_*`` counts only unusable output (not timeouts or HTTP errors);
``first_attempt_failure_rate_*`` counts failures before retries; ``metric_failure_rate_*`` = (sample, metric)
pairs that could not be scored / pairs; ``judge_agreement`` = per judged metric, the judge's agreement with the
calibration set's labels and its 95 % Wilson interval.

Run: ``make bench-eval`` (= ``python bench/eval.py``; ``ARGS="--samples 8 --contexts 2"``) -> bench/results/eval.json.
About 15 minutes on an idle 2-core machine with the defaults (engine start ~40 s, ~2 min per structured pass, the
judge check ~2 min, the unstructured pass ~6 min).
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


def scifact_samples(data: Path, n: int, contexts: int) -> list[tuple[EvalSample, SampleTrace]]:
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
    # Distractors: other samples' relevant abstracts (same domain, not about this claim), in a fixed order.
    relevant = [cid for _, cid in pairs]
    out = []
    for i, (qid, cid) in enumerate(pairs):
        claim, abstract = queries[qid], corpus[cid]["text"]
        others = [relevant[(i + k) % len(relevant)] for k in range(1, len(relevant))]
        ids = [cid, *[o for o in others if o != cid][: contexts - 1]]
        answer = abstract.split(". ")[0].strip()[:300] + "."
        sample = EvalSample(
            id=qid, question=f"Is it true that {claim[0].lower()}{claim[1:]}", reference=claim
        )
        trace = SampleTrace(
            sample_id=qid,
            config="bench",
            question=sample.question,
            answer=answer,
            retrieved=[RetrievedChunk(id=d, doc_id=d, text=corpus[d]["text"]) for d in ids],
        )
        out.append((sample, trace))
    return out


async def score_all(
    judge: JudgeConfig, samples: list[tuple[EvalSample, SampleTrace]], embedding_path: Path
) -> dict[str, Any]:
    scorer = build_scorer(list(JUDGED_METRICS), judge, embedding_path)
    await scorer.prepare()  # the window (/v1/models) and the tokenizer, outside the timed part
    start = time.perf_counter()
    results = await asyncio.gather(*(scorer.score(s, t) for s, t in samples))
    seconds = time.perf_counter() - start
    assert scorer.judge is not None and scorer.judge.budget is not None
    pairs = [score for result in results for score in result.values()]
    failed = [s for s in pairs if s.status == "failed"]
    reasons: dict[str, int] = {}
    for score in failed:
        key = (score.reason or "").split(" (")[0][:80]
        reasons[key] = reasons.get(key, 0) + 1
    calls = scorer.judge.calls
    prompt_tokens = [c.prompt_tokens for s in pairs for c in s.judge_calls if c.prompt_tokens is not None]
    budget = scorer.judge.budget
    return {
        "seconds": round(seconds, 1),
        "samples_per_minute": round(len(samples) / seconds * 60, 2),
        "judge_window_tokens": budget.window.tokens,
        "judge_window_source": budget.window.source,
        "prompt_limit_tokens": budget.prompt_limit,
        "token_counter": budget.counter.description,
        "judge_calls": calls,
        "split_calls": sum(1 for s in pairs for c in s.judge_calls if (c.note or "").startswith("batch")),
        "max_prompt_tokens": max(prompt_tokens, default=None),
        "judge_failures": scorer.judge.failures,
        "judge_failure_rate": round(scorer.judge.failures / calls, 4) if calls else None,
        "judge_parse_failure_rate": round(scorer.judge.parse_failures / calls, 4) if calls else None,
        "first_attempt_failure_rate": round(scorer.judge.first_attempt_failures / calls, 4)
        if calls
        else None,
        "metric_failure_rate": round(len(failed) / len(pairs), 4),
        "context_overflow_failures": sum(1 for s in failed if s.failure_kind == "context"),
        "failure_reasons": reasons,
        "per_metric_ok": {m: sum(1 for r in results if r[m].status == "ok") for m in JUDGED_METRICS},
    }


async def judge_check(judge: JudgeConfig, embedding_path: Path) -> dict[str, Any]:
    scorer = build_scorer(list(JUDGED_METRICS), judge, embedding_path)
    check = await scorer.run_judge_check(refresh=True)
    return {
        "seconds": check.seconds,
        "prompt_version": check.prompt_version,
        "calibration_sha": check.calibration_sha,
        "metrics": {
            name: {
                "agreement": m.agreement,
                "ci_low": m.ci_low,
                "ci_high": m.ci_high,
                "n": m.n,
                "n_failed": m.n_failed,
                "chance": m.chance,
                "reliable": m.reliable,
            }
            for name, m in check.metrics.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--contexts", type=int, default=2, help="Retrieved abstracts per sample.")
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
    parser.add_argument("--skip-unstructured", action="store_true", help="Leave out the prompt-only pass.")
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "scifact")
    args = parser.parse_args()
    console = Console()

    provenance = machine()  # before anything is written: commit, dirty flag, code hash
    models = ModelSettings()
    embedding_path = Path(resolve_model("all-minilm-l6-v2", models))
    base_path = Path(resolve_model(BASE, models))
    samples = scifact_samples(args.data, args.samples, args.contexts)
    engine = None
    url = args.judge_url
    if url is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        engine = EngineProcess(EngineSettings(port=port, max_num_seqs=64), str(base_path), BASE)
        engine.start()
        engine.wait_ready()
        url = f"{engine.url}/v1"
    defaults = EvalSettings()

    def judge(structured: bool, window: int | None) -> JudgeConfig:
        config = JudgeConfig.from_settings(
            defaults, url, args.judge_model, None, base_path if args.judge_model == BASE else None
        )
        config.structured_output, config.context_tokens = structured, window
        config.timeout_s, config.cache_dir, config.check_cache_dir = args.judge_timeout, None, None
        config.judge_check = False
        return config

    passes: list[tuple[str, bool, int | None]] = [("structured", True, None), ("structured_2048", True, 2048)]
    if not args.skip_unstructured:
        passes.append(("unstructured", False, None))
    started = time.perf_counter()
    try:
        runs = {}
        for label, structured, window in passes:
            console.print(f"scoring {len(samples)} samples × {args.contexts} contexts, {label} ...")
            runs[label] = asyncio.run(score_all(judge(structured, window), samples, embedding_path))
        console.print("judge check on the calibration set ...")
        check = asyncio.run(judge_check(judge(True, None), embedding_path))
    finally:
        if engine is not None:
            engine.stop()

    unstructured = runs.get("unstructured", {})
    payload = {
        "machine": provenance,
        "judge": {"model": args.judge_model, "url": url if args.judge_url else "embedded vLLM engine"},
        "dataset": f"BEIR SciFact train claims, {len(samples)} samples, {args.contexts} whole abstracts each",
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
        "samples_per_minute_2048": runs["structured_2048"]["samples_per_minute"],
        "samples_per_minute_unstructured": unstructured.get("samples_per_minute"),
        "context_overflow_failures": sum(
            runs[p]["context_overflow_failures"] for p in ("structured", "structured_2048")
        ),
        "judge_agreement": check["metrics"],
        "judge_check_seconds": check["seconds"],
        "judge_failure_rate_structured": runs["structured"]["judge_failure_rate"],
        "judge_failure_rate_structured_2048": runs["structured_2048"]["judge_failure_rate"],
        "judge_failure_rate_unstructured": unstructured.get("judge_failure_rate"),
        "judge_parse_failure_rate_structured": runs["structured"]["judge_parse_failure_rate"],
        "judge_parse_failure_rate_unstructured": unstructured.get("judge_parse_failure_rate"),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "bench_seconds": round(time.perf_counter() - started, 1),
        "runs": runs,
        "judge_check": check,
    }
    path = write_results("eval", payload)
    table = Table(
        "pass",
        "window",
        "samples/min",
        "judge calls",
        "split calls",
        "failure rate",
        "first-attempt failures",
        "metric failures",
        "overflow failures",
    )
    for label, run in runs.items():
        table.add_row(
            label,
            f"{run['judge_window_tokens']} ({run['judge_window_source']})",
            str(run["samples_per_minute"]),
            str(run["judge_calls"]),
            str(run["split_calls"]),
            f"{run['judge_failure_rate']:.1%}",
            f"{run['first_attempt_failure_rate']:.1%}",
            f"{run['metric_failure_rate']:.1%}",
            str(run["context_overflow_failures"]),
        )
    console.print(table)
    agreement = Table(
        "metric", "agreement", "95 % CI", "items", "judge", title="judge check (calibration set)"
    )
    for name, m in check["metrics"].items():
        ci = "–" if m["ci_low"] is None else f"[{m['ci_low']:.2f}, {m['ci_high']:.2f}]"
        value = "–" if m["agreement"] is None else f"{m['agreement']:.2f}"
        agreement.add_row(name, value, ci, str(m["n"]), "reliable" if m["reliable"] else "judge unreliable")
    console.print(agreement)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
