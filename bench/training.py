"""Training benchmark: fact learning speed/quality of the LoRA trainer, reranker and embedder nDCG@10 on SciFact.

    .venv/bin/python bench/training.py [--facts 50] [--epochs 10] [--data ../shared/data/scifact] [--quick]
        [--from-trained RERANKER_DIR EMBEDDER_DIR]

Fact learning trains the shipped recipe (``training/recipes/company_facts.yaml``: 50 made-up facts about a
fictional company) and, after each epoch, asks every question greedily (batched ``generate``); the clock is paused
while it checks, so ``minutes_to_90pct_facts`` is training time only. The base model is asked the same questions
first. Reranker/embedder: trained on a seeded half of SciFact's train queries, nDCG@10 on the other half.
Each phase (fact learning, reranker, embedder) runs in a fresh process, so each reports its own peak RSS and none
inherits another's memory. Writes ``bench/results/training.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _common import REPO, SHARED_DATA, machine, write_results
from rich.console import Console
from rich.table import Table

console = Console()
RECIPE = REPO / "training" / "recipes" / "company_facts.yaml"


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _with_peak_rss(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    return {**fn(*args), "peak_rss_mb": peak_rss_mb()}


def in_fresh_process(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``fn(*args)`` in a new (spawned) process, with that process's peak RSS added as ``peak_rss_mb``."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_with_peak_rss, fn, *args).result()


def fact_accuracy(model: Any, tokenizer: Any, facts: list[tuple[str, str]]) -> float:
    """Share of questions answered exactly with the trained answer (greedy, one batch)."""
    import torch

    tokenizer.padding_side = "left"
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        for q, _ in facts
    ]
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=28, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    if was_training:
        model.train()
    tokenizer.padding_side = "right"
    width = enc["input_ids"].shape[1]
    answers = [tokenizer.decode(ids[width:], skip_special_tokens=True).strip() for ids in out]
    return sum(a == e for a, (_, e) in zip(answers, facts, strict=True)) / len(facts)


def bench_facts(n_facts: int, epochs: float, workdir: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from ragswap.model_store import ModelSettings, resolve_model
    from training import load_config, train

    rows = [
        json.loads(line) for line in (RECIPE.parent / "data" / "company_facts.jsonl").read_text().splitlines()
    ]
    facts = [(r["instruction"], r["output"]) for r in rows[:n_facts]]
    data = workdir / "facts.jsonl"
    data.write_text("".join(json.dumps({"instruction": q, "output": a}) + "\n" for q, a in facts))
    config = load_config(RECIPE, output_dir=workdir / "facts-adapter", num_epochs=epochs)
    config.datasets[0].path = data
    model_path = resolve_model(config.base_model, ModelSettings())
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    base_acc = fact_accuracy(base, tokenizer, facts)
    del base

    curve: list[dict[str, float]] = []

    class EpochAccuracy(TrainerCallback):
        """Accuracy after each epoch, with the time spent checking taken out of the training clock."""

        def __init__(self) -> None:
            self.start = time.perf_counter()
            self.paused = 0.0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            now = time.perf_counter()
            train_s = now - self.start - self.paused
            acc = fact_accuracy(kwargs["model"], tokenizer, facts)
            self.paused += time.perf_counter() - now
            curve.append(
                {"epoch": round(state.epoch, 2), "train_seconds": round(train_s, 1), "accuracy": acc}
            )
            console.print(f"  epoch {state.epoch:.0f}: {acc:.0%} of facts after {train_s:.0f}s of training")

    result = train(config, models=ModelSettings(), progress=True, callbacks=[EpochAccuracy()])
    reached = next((c["train_seconds"] for c in curve if c["accuracy"] >= 0.9), None)
    metrics = result.manifest.metrics
    return {
        "facts": n_facts,
        "recipe": str(RECIPE.relative_to(REPO)),
        "epochs": epochs,
        "steps": result.global_step,
        "seconds_per_step": round(result.seconds_per_step, 3),
        "tokens_per_second": round(result.tokens_per_second, 1),
        "train_seconds_total": round(metrics["wall_seconds"], 1),
        "final_train_loss": round(result.train_loss or 0.0, 4),
        "base_fact_accuracy": base_acc,
        "fact_accuracy": curve[-1]["accuracy"] if curve else None,
        "minutes_to_90pct_facts": round(reached / 60, 2) if reached is not None else None,
        "accuracy_by_epoch": curve,
    }


def bench_retriever(kind: str, data_dir: Path, workdir: Path, quick: bool) -> dict[str, Any]:
    """Train the reranker or the embedder with its defaults; its figures under ``<kind>_*`` keys."""
    from ragswap import ModelSettings
    from retrieval import load_beir, split_queries
    from training import EmbedderConfig, RerankerConfig, train_embedder, train_reranker

    train_ids, eval_ids = split_queries(list(load_beir(data_dir).qrels), 0.5, seed=42)
    options: dict[str, Any] = {"max_corpus_docs": 1500} if quick else {}
    if quick:
        train_ids, eval_ids = train_ids[:150], eval_ids[:60]
    options |= {"train_query_ids": train_ids, "eval_query_ids": eval_ids}
    if kind == "reranker":
        result = train_reranker(
            data_dir, workdir / kind, models=ModelSettings(), config=RerankerConfig(**options)
        )
    else:
        result = train_embedder(
            data_dir, workdir / kind, models=ModelSettings(), config=EmbedderConfig(**options)
        )
    figures = {
        "scifact_train_queries": len(train_ids),
        "scifact_heldout_queries": len(eval_ids),
        f"{kind}_ndcg10_untrained": round(result.ndcg10_before, 4),
        f"{kind}_ndcg10_trained": round(result.ndcg10_after, 4),
        f"{kind}_steps": result.steps,
        f"{kind}_train_seconds": round(result.seconds, 1),
    }
    if kind == "reranker":
        figures["reranker_bm25_ndcg10"] = round(result.metrics.get("bm25_ndcg10", float("nan")), 4)
    return figures


def bench_retrievers(data_dir: Path, workdir: Path, quick: bool, kinds: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {
        "corpus": "1500-doc subset" if quick else "full (5,183 docs)",
        "trained": kinds,
    }
    for kind in kinds:
        console.print(f"{kind} on SciFact (fresh process)")
        figures = in_fresh_process(bench_retriever, kind, data_dir, workdir, quick)
        results[f"{kind}_peak_rss_mb"] = figures.pop("peak_rss_mb")
        results.update(figures)
    results["note"] = (
        "untrained reranker = MiniLM with a fresh scoring head; untrained embedder = all-MiniLM-L6-v2"
    )
    return results


def retrievers_from_manifests(reranker: Path, embedder: Path) -> dict[str, Any]:
    """Figures of a reranker and an embedder already trained by ``training`` (e.g. by ``bench/retrieval.py``,
    which trains both on the full SciFact corpus): read from their ``ragswap-retriever.json``."""
    from training import RetrieverManifest

    rr, emb = RetrieverManifest.read(reranker), RetrieverManifest.read(embedder)
    return {
        "source": f"manifests of models trained earlier: {reranker}, {embedder}",
        "scifact_train_queries": len(rr.data["train_query_ids"]),
        "scifact_heldout_queries": len(rr.data["eval_query_ids"]),
        "corpus": f"{rr.data['corpus_docs']} docs",
        "reranker_ndcg10_untrained": round(rr.metrics["ndcg10_before"], 4),
        "reranker_ndcg10_trained": round(rr.metrics["ndcg10_after"], 4),
        "reranker_bm25_ndcg10": round(rr.metrics.get("bm25_ndcg10", float("nan")), 4),
        "reranker_steps": rr.metrics["steps"],
        "reranker_train_seconds": rr.metrics["wall_seconds"],
        "reranker_hyperparameters": rr.hyperparameters,
        "embedder_ndcg10_untrained": round(emb.metrics["ndcg10_before"], 4),
        "embedder_ndcg10_trained": round(emb.metrics["ndcg10_after"], 4),
        "embedder_steps": emb.metrics["steps"],
        "embedder_train_seconds": emb.metrics["wall_seconds"],
        "embedder_hyperparameters": emb.hyperparameters,
        "note": "untrained reranker = MiniLM with a fresh scoring head (reranking BM25's top 30); untrained "
        "embedder = all-MiniLM-L6-v2 (dense retrieval over the corpus); nDCG@10 on the held-apart queries",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facts", type=int, default=50)
    parser.add_argument("--epochs", type=float, default=10)
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "scifact")
    parser.add_argument("--quick", action="store_true", help="retrievers on a subset (minutes, not tens)")
    parser.add_argument("--skip-retrievers", action="store_true")
    parser.add_argument(
        "--retrievers",
        default="reranker,embedder",
        help="which retrievers to train (comma-separated): the default listwise reranker takes hours on 2 cores",
    )
    parser.add_argument(
        "--from-trained",
        nargs=2,
        type=Path,
        metavar=("RERANKER_DIR", "EMBEDDER_DIR"),
        help="report the retrievers from these trained models' manifests instead of training them again",
    )
    args = parser.parse_args()
    kinds = [k for k in args.retrievers.split(",") if k]
    if not set(kinds) <= {"reranker", "embedder"}:
        parser.error(f"--retrievers takes reranker and/or embedder, not {args.retrievers!r}")

    import torch

    results: dict[str, Any] = {"machine": machine()}
    results["machine"]["gpu"] = None
    results["machine"]["gpu_reason"] = "no CUDA GPU on this machine: CPU training only (QLoRA unavailable)"
    results["machine"]["torch_threads"] = torch.get_num_threads()
    results["machine"]["load_average_at_start"] = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ragswap-bench-training-") as tmp:
        console.print(f"fact learning: {args.facts} facts, {args.epochs} epochs")
        results["sft"] = in_fresh_process(bench_facts, args.facts, args.epochs, Path(tmp))
        if args.from_trained:
            results["retrievers"] = retrievers_from_manifests(*args.from_trained)
        elif not args.skip_retrievers:
            results["retrievers"] = bench_retrievers(args.data, Path(tmp), args.quick, kinds)
    flat = {**results["sft"], **results.get("retrievers", {})}
    results.update(
        {
            k: flat.get(k)
            for k in (
                "seconds_per_step",
                "tokens_per_second",
                "fact_accuracy",
                "base_fact_accuracy",
                "minutes_to_90pct_facts",
                "reranker_ndcg10_trained",
                "reranker_ndcg10_untrained",
                "embedder_ndcg10_trained",
                "embedder_ndcg10_untrained",
            )
        }
    )
    results["peak_rss_mb"] = max(
        [results["sft"]["peak_rss_mb"]]
        + [v for k, v in results.get("retrievers", {}).items() if k.endswith("_peak_rss_mb")]
    )
    results["machine"]["load_average_at_end"] = os.getloadavg()
    path = write_results("training", results)
    table = Table("metric", "value", title="training benchmark")
    for key, value in results.items():
        if key not in ("machine", "sft", "retrievers"):
            table.add_row(key, str(value))
    console.print(table)
    console.print(f"written to {path}")


if __name__ == "__main__":
    main()
