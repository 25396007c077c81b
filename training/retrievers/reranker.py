"""Fine-tune a cross-encoder reranker on BEIR judgements with BM25-mined hard negatives.

The starting point is the offline MiniLM bi-encoder's transformer with a fresh (untrained) scoring head, so the
"before" figure is what an untrained reranker does to BM25's ranking; "after" is the same held-apart queries
reranked by the trained model. The manifest also records the blend weight with the first stage that ranked those
queries best (``recommended_rerank_weight``); search uses it unless a request or setting names one.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from training.retrievers.beir import BeirData, load_beir, split_queries
from training.retrievers.common import RetrieverManifest, RetrieverTrainResult, judged, limit_corpus
from training.retrievers.mining import Bm25Index, build_bm25, hard_negatives

logger = logging.getLogger(__name__)


def rerank_samples(
    data: BeirData, index: Bm25Index, query_ids: list[str], depth: int
) -> list[dict[str, Any]]:
    """Evaluator samples: BM25's top ``depth`` documents of each query (ranked) and its relevant documents."""
    ranked = index.search([data.queries[q] for q in query_ids], k=depth)
    return [
        {
            "query": data.queries[qid],
            "positive": [data.corpus[d] for d in data.qrels[qid] if d in data.corpus],
            "documents": [data.corpus[d] for d in docs],
        }
        for qid, docs in zip(query_ids, ranked, strict=True)
    ]


BLEND_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def blend_grid(
    model: Any, data: BeirData, index: Bm25Index, query_ids: list[str], depth: int
) -> dict[float, float]:
    """nDCG@10 per blend weight ``w`` of BM25's top ``depth`` reordered by ``w·minmax(cross-encoder) +
    (1-w)·minmax(BM25)`` — the blend search applies (:func:`retrieval.fusion.blend`). A small reranker trained
    on a few hundred queries often ranks best as a correction to the first stage rather than on its own."""
    from retrieval.fusion import blend

    totals = dict.fromkeys(BLEND_WEIGHTS, 0.0)
    ranked = index.search_scored([data.queries[q] for q in query_ids], k=depth)
    for qid, row in zip(query_ids, ranked, strict=True):
        first = dict(row)
        pairs = [(data.queries[qid], data.corpus[doc]) for doc in first]
        scores = model.predict(pairs, batch_size=64, show_progress_bar=False)
        rerank = {doc: float(s) for doc, s in zip(first, scores, strict=True)}
        for w in BLEND_WEIGHTS:
            final = blend(rerank, first, w)
            order = sorted(final, key=lambda doc: final[doc], reverse=True)
            totals[w] += _ndcg10(order, set(data.qrels[qid]))
    return {w: total / len(query_ids) for w, total in totals.items()}


def _ndcg10(ranked: list[str], relevant: set[str]) -> float:
    """Binary-relevance nDCG@10, the figure the reranking evaluator reports."""
    dcg = sum(1.0 / math.log2(rank + 2) for rank, doc in enumerate(ranked[:10]) if doc in relevant)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(len(relevant), 10)))
    return dcg / ideal if ideal else 0.0


def _pairs(data: BeirData, negatives: dict[str, list[str]], query_ids: list[str]) -> dict[str, list[Any]]:
    rows: dict[str, list[Any]] = {"query": [], "passage": [], "label": []}
    for qid in query_ids:
        docs = [(d, 1.0) for d in data.qrels[qid] if d in data.corpus] + [(d, 0.0) for d in negatives[qid]]
        for doc, label in docs:
            rows["query"].append(data.queries[qid])
            rows["passage"].append(data.corpus[doc])
            rows["label"].append(label)
    return rows


def train_reranker(
    data_dir: str | Path,
    output_dir: str | Path,
    *,
    train_query_ids: list[str] | None = None,
    eval_query_ids: list[str] | None = None,
    split: str = "train",
    eval_fraction: float = 0.5,
    base_model: str = "all-minilm-l6-v2",
    negatives: int = 7,
    epochs: float = 2.0,
    max_steps: int = -1,
    batch_size: int = 16,
    learning_rate: float = 5e-5,
    max_length: int = 256,
    rerank_depth: int = 30,
    max_corpus_docs: int | None = None,
    seed: int = 42,
    progress: bool = True,
) -> RetrieverTrainResult:
    """Train a cross-encoder reranker and report nDCG@10 of reranking BM25's top ``rerank_depth`` before/after.

    Args:
        data_dir: BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``).
        output_dir: where the trained CrossEncoder (and ``ragswap-retriever.json``) goes.
        train_query_ids: queries to learn from (default: a seeded ``1 - eval_fraction`` share of judged queries).
        eval_query_ids: held-apart queries for nDCG@10 (default: judged queries not trained on).
        split: qrels file name under ``qrels/``.
        eval_fraction: share held apart when neither id list is given.
        base_model: catalog name or path of the transformer to start from.
        negatives: BM25 hard negatives per query (label 0) next to its relevant documents (label 1).
        epochs / max_steps / batch_size / learning_rate / max_length: training schedule and input size.
        rerank_depth: BM25 candidates reranked in the evaluation.
        max_corpus_docs: shrink the corpus (relevant and BM25-near documents kept) for quick runs.
        seed: data order, splits and head initialisation.
        progress: show progress bars.
    """
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    from transformers import set_seed

    from ragswap.model_store import ModelSettings, resolve_model

    torch.set_num_threads(os.cpu_count() or 1)
    set_seed(seed)
    out = Path(output_dir)
    data = load_beir(Path(data_dir), split)
    train_ids, eval_ids = _choose(data, train_query_ids, eval_query_ids, eval_fraction, seed)
    index = build_bm25(data.corpus)
    data = limit_corpus(data, index, eval_ids + train_ids, max_corpus_docs, seed)
    index = build_bm25(data.corpus) if max_corpus_docs else index
    train_ids = [q for q in train_ids if any(d in data.corpus for d in data.qrels[q])]
    negs = hard_negatives(index, data.queries, data.qrels, train_ids, per_query=negatives)
    train_ds = Dataset.from_dict(_pairs(data, negs, train_ids)).shuffle(seed=seed)
    model_path = resolve_model(base_model, ModelSettings())
    model = CrossEncoder(model_path, num_labels=1, max_length=max_length)
    evaluator = CrossEncoderRerankingEvaluator(
        rerank_samples(data, index, eval_ids, rerank_depth),
        at_k=10,
        always_rerank_positives=False,
        name="heldout",
        batch_size=64,
        write_csv=False,
    )
    before = evaluator(model)
    pos_weight = torch.tensor(float(negatives))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ragswap-reranker-") as scratch:
        args = CrossEncoderTrainingArguments(
            output_dir=scratch,
            num_train_epochs=epochs,
            max_steps=max_steps,
            per_device_train_batch_size=batch_size,
            learning_rate=learning_rate,
            warmup_steps=0.1,
            weight_decay=0.01,
            save_strategy="no",
            logging_steps=10,
            report_to=[],
            seed=seed,
            use_cpu=not torch.cuda.is_available(),
            disable_tqdm=not progress,
            dataloader_drop_last=False,
        )
        trainer = CrossEncoderTrainer(
            model=model,
            args=args,
            train_dataset=train_ds,
            loss=BinaryCrossEntropyLoss(model, pos_weight=pos_weight),
        )
        trainer.train()
        steps = trainer.state.global_step
        history = trainer.state.log_history
    seconds = time.perf_counter() - started
    after = evaluator(model)
    blends = blend_grid(model, data, index, eval_ids, rerank_depth)
    recommended = max(blends, key=lambda w: (blends[w], w))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    key = str(evaluator.primary_metric)
    result = RetrieverTrainResult(
        output_dir=out,
        ndcg10_before=float(before[key]),
        ndcg10_after=float(after[key]),
        steps=steps,
        seconds=seconds,
        train_queries=len(train_ids),
        eval_queries=len(eval_ids),
        metrics={
            "bm25_ndcg10": float(after.get("heldout_base_ndcg@10", float("nan"))),
            "blended_ndcg10": blends[recommended],
            "recommended_rerank_weight": recommended,
        },
    )
    RetrieverManifest(
        kind="reranker",
        base_model=base_model,
        data={
            "beir_sha256": data.fingerprint,
            "split": split,
            "corpus_docs": len(data.corpus),
            "train_query_ids": train_ids,
            "eval_query_ids": eval_ids,
            "train_pairs": len(train_ds),
        },
        hyperparameters={
            "loss": "BinaryCrossEntropyLoss",
            "negatives": negatives,
            "epochs": epochs,
            "max_steps": max_steps,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "max_length": max_length,
            "rerank_depth": rerank_depth,
            "seed": seed,
        },
        metrics={
            "ndcg10_before": result.ndcg10_before,
            "ndcg10_after": result.ndcg10_after,
            **result.metrics,
            "blend_ndcg10": {str(w): round(v, 4) for w, v in blends.items()},
            "steps": steps,
            "wall_seconds": round(seconds, 2),
            "loss_curve": [[h["step"], h["loss"]] for h in history if "loss" in h],
        },
    ).write(out)
    logger.info(
        "reranker nDCG@10 %.4f -> %.4f on %d held-apart queries (blended with BM25 at w=%.1f: %.4f)",
        result.ndcg10_before,
        result.ndcg10_after,
        len(eval_ids),
        recommended,
        blends[recommended],
    )
    return result


def _choose(
    data: BeirData,
    train_ids: list[str] | None,
    eval_ids: list[str] | None,
    eval_fraction: float,
    seed: int,
) -> tuple[list[str], list[str]]:
    """(train, held-apart) query ids, never overlapping."""
    from training.data import DatasetError

    if train_ids is None and eval_ids is None:
        return split_queries(list(data.qrels), eval_fraction, seed)
    train = judged(data, train_ids) if train_ids is not None else None
    evals = judged(data, eval_ids) if eval_ids is not None else None
    if train is None:
        assert evals is not None
        train = [q for q in judged(data, None) if q not in set(evals)]
    if evals is None:
        evals = [q for q in judged(data, None) if q not in set(train)]
    overlap = set(train) & set(evals)
    if overlap:
        raise DatasetError(
            [f"{len(overlap)} query id(s) are both trained on and held apart: {sorted(overlap)[:5]}"]
        )
    if not train or not evals:
        raise DatasetError(["need at least one judged training query and one judged held-apart query"])
    return train, evals
