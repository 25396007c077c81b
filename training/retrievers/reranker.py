"""Fine-tune a cross-encoder reranker on BEIR judgements with BM25-mined hard negatives.

The starting point is a bi-encoder's transformer (the offline MiniLM, or better a domain-trained embedder) with a
fresh (untrained) scoring head, so the "before" figure is what an untrained reranker does to BM25's ranking;
"after" is the same held-apart queries reranked by the trained model. The default loss is listwise: each positive
against its BM25 hard negatives and the batch's other passages (measured on the test corpus: alone 0.23 vs 0.16
for pointwise BCE at the old 5e-5, and 0.44 starting from the trained embedder). The manifest also records the blend weight with the first stage that ranked those
queries best (``recommended_rerank_weight``); search uses it unless a request or setting names one.

Every stage reports progress (indexing, mining, scoring the held-apart candidates, training); the held-apart
candidates are scored once after training and both the "after" figure and the blend grid come from those scores.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retrieval import BeirData
from training.retrievers.common import (
    RetrieverManifest,
    RetrieverTrainResult,
    positives,
    prepare_judged,
    stage_bar,
)
from training.retrievers.mining import CorpusBm25, hard_negatives

if TYPE_CHECKING:
    from ragswap import ModelSettings

logger = logging.getLogger(__name__)
BLEND_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def first_stage(
    data: BeirData, index: CorpusBm25, query_ids: list[str], depth: int
) -> dict[str, list[tuple[str, float]]]:
    """BM25's top ``depth`` (doc id, score) of each query: the candidates a reranker reorders."""
    ranked = index.search_scored([data.queries[q] for q in query_ids], k=depth)
    return dict(zip(query_ids, ranked, strict=True))


def score_candidates(
    model: Any,
    data: BeirData,
    candidates: dict[str, list[tuple[str, float]]],
    *,
    desc: str,
    progress: bool,
    batch_size: int = 64,
) -> dict[str, dict[str, float]]:
    """The cross-encoder's score of every (query, candidate) pair, with a progress bar."""
    pairs = [(qid, doc) for qid, row in candidates.items() for doc, _ in row]
    out: dict[str, dict[str, float]] = {qid: {} for qid in candidates}
    with stage_bar(desc, len(pairs), progress) as bar:
        for start in range(0, len(pairs), 256):
            block = pairs[start : start + 256]
            scores = model.predict(
                [(data.queries[q], data.corpus[d]) for q, d in block],
                batch_size=batch_size,
                show_progress_bar=False,
            )
            for (qid, doc), s in zip(block, scores, strict=True):
                out[qid][doc] = float(s)
            bar.update(len(block))
    return out


def blend_grid(
    rerank: dict[str, dict[str, float]],
    candidates: dict[str, list[tuple[str, float]]],
    qrels: dict[str, dict[str, int]],
) -> dict[float, float]:
    """nDCG@10 per blend weight ``w`` of the candidates reordered by ``w·minmax(cross-encoder) +
    (1-w)·minmax(first stage)`` — the blend search applies. A small reranker trained on a few hundred queries
    often ranks best as a correction to the first stage rather than on its own."""
    from eval import ndcg_at_k
    from retrieval import blend

    totals = dict.fromkeys(BLEND_WEIGHTS, 0.0)
    for qid, row in candidates.items():
        first = dict(row)
        for w in BLEND_WEIGHTS:
            final = blend(rerank[qid], first, w)
            order = sorted(final, key=lambda doc: final[doc], reverse=True)
            totals[w] += ndcg_at_k(order, qrels[qid], 10)
    return {w: total / len(candidates) for w, total in totals.items()}


def _ranked_ndcg(scores: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> float:
    from eval import ndcg_at_k

    total = 0.0
    for qid, by_doc in scores.items():
        total += ndcg_at_k(sorted(by_doc, key=lambda d: by_doc[d], reverse=True), qrels[qid], 10)
    return total / max(1, len(scores))


def _pairs(
    data: BeirData, negatives: dict[str, list[str]], query_ids: list[str], max_positives: int
) -> dict[str, list[Any]]:
    """(query, passage, label) rows for a pointwise loss."""
    rows: dict[str, list[Any]] = {"query": [], "passage": [], "label": []}
    for qid in query_ids:
        docs = [(d, 1.0) for d in positives(data, qid, max_positives)] + [(d, 0.0) for d in negatives[qid]]
        for doc, label in docs:
            rows["query"].append(data.queries[qid])
            rows["passage"].append(data.corpus[doc])
            rows["label"].append(label)
    return rows


def _lists(
    data: BeirData, negatives: dict[str, list[str]], query_ids: list[str], n: int, max_positives: int
) -> dict[str, list[Any]]:
    """(query, positive, negative_1..n) rows for a listwise loss: each positive against its hard negatives."""
    rows: dict[str, list[Any]] = {
        "query": [],
        "positive": [],
        **{f"negative_{i}": [] for i in range(1, n + 1)},
    }
    for qid in query_ids:
        negs = negatives[qid]
        if len(negs) < n:
            continue
        for doc in positives(data, qid, max_positives):
            rows["query"].append(data.queries[qid])
            rows["positive"].append(data.corpus[doc])
            for i in range(n):
                rows[f"negative_{i + 1}"].append(data.corpus[negs[i]])
    return rows


def train_reranker(
    data_dir: str | Path,
    output_dir: str | Path,
    *,
    models: ModelSettings,
    train_query_ids: list[str] | None = None,
    eval_query_ids: list[str] | None = None,
    split: str = "train",
    eval_fraction: float = 0.5,
    base_model: str = "all-minilm-l6-v2",
    negatives: int = 7,
    epochs: float = 3.0,
    max_steps: int = -1,
    batch_size: int = 16,
    learning_rate: float = 1e-4,
    max_length: int = 256,
    mini_batch_size: int = 32,
    rerank_depth: int = 30,
    max_corpus_docs: int | None = None,
    loss: str = "listwise",
    max_positives: int = 4,
    seed: int = 42,
    progress: bool = True,
) -> RetrieverTrainResult:
    """Train a cross-encoder reranker and report nDCG@10 of reranking BM25's top ``rerank_depth`` before/after.

    Args:
        data_dir: BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``).
        output_dir: where the trained CrossEncoder (and ``ragswap-retriever.json``) goes.
        models: the model store ``base_model`` is resolved in (the entry point's ``settings.models``).
        train_query_ids: queries to learn from (default: a seeded ``1 - eval_fraction`` share of judged queries).
        eval_query_ids: held-apart queries for nDCG@10 (default: judged queries not trained on).
        split: qrels file name under ``qrels/``.
        eval_fraction: share held apart when neither id list is given.
        base_model: catalog name or path of the transformer to start from; a domain-trained embedder
            (``train_embedder``'s output) is a better start than the off-the-shelf one (measured: docs/training.md).
        negatives: BM25 hard negatives per query (label 0) next to its relevant documents (label 1).
        epochs / max_steps / batch_size / learning_rate / max_length: training schedule and input size.
        mini_batch_size: (query, passage) pairs run through the model at once by the listwise loss, which
            caches gradients (GradCache) so a step's ``batch_size * (1 + 2 * negatives)`` pairs never all hold
            activations together: same gradients as scoring them at once, memory bounded by this number
            (measured: docs/training.md). Without it a default step (240 pairs of 256 tokens) took over 18 GB.
        rerank_depth: BM25 candidates reranked in the evaluation.
        max_corpus_docs: shrink the corpus (relevant and BM25-near documents kept) for quick runs.
        loss: ``bce`` (each pair labelled relevant or not) or ``listwise`` (each positive scored against its
            ``negatives`` hard negatives and the batch's other passages, softmax cross-entropy).
        max_positives: a query's best-graded relevant documents trained on.
        seed: data order, splits and head initialisation.
        progress: show progress bars (every stage has one).
    """
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import (
        BinaryCrossEntropyLoss,
        CachedMultipleNegativesRankingLoss,
    )
    from transformers import set_seed

    from ragswap import model_loading, resolve_model

    torch.set_num_threads(os.cpu_count() or 1)
    set_seed(seed)
    out = Path(output_dir)
    with (
        prepare_judged(
            Path(data_dir),
            split,
            train_query_ids=train_query_ids,
            eval_query_ids=eval_query_ids,
            eval_fraction=eval_fraction,
            max_corpus_docs=max_corpus_docs,
            seed=seed,
            progress=progress,
        ) as judged,
        stage_bar("mining hard negatives", 1, progress) as bar,
    ):
        data, train_ids, eval_ids = judged.data, judged.train_ids, judged.eval_ids
        negs = hard_negatives(judged.index, data.queries, data.qrels, train_ids, per_query=negatives)
        candidates = first_stage(data, judged.index, eval_ids, rerank_depth)
        bar.update(1)
    qrels = {q: data.qrels[q] for q in eval_ids}
    bm25_ndcg = _ranked_ndcg({q: dict(row) for q, row in candidates.items()}, qrels)
    rows = (
        _lists(data, negs, train_ids, negatives, max_positives)
        if loss == "listwise"
        else _pairs(data, negs, train_ids, max_positives)
    )
    train_ds = Dataset.from_dict(rows).shuffle(seed=seed)
    with model_loading():
        model = CrossEncoder(resolve_model(base_model, models), num_labels=1, max_length=max_length)
    before = _ranked_ndcg(
        score_candidates(
            model, data, candidates, desc="scoring held-apart candidates (untrained)", progress=progress
        ),
        qrels,
    )
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
            loss=(
                CachedMultipleNegativesRankingLoss(
                    model, num_negatives=negatives, mini_batch_size=mini_batch_size
                )
                if loss == "listwise"
                else BinaryCrossEntropyLoss(model, pos_weight=pos_weight)
            ),
        )
        trainer.train()
        steps = trainer.state.global_step
        history = trainer.state.log_history
    seconds = time.perf_counter() - started
    trained = score_candidates(
        model, data, candidates, desc="scoring held-apart candidates", progress=progress
    )
    after = _ranked_ndcg(trained, qrels)
    blends = blend_grid(trained, candidates, qrels)
    recommended = max(blends, key=lambda w: (blends[w], w))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    result = RetrieverTrainResult(
        output_dir=out,
        ndcg10_before=before,
        ndcg10_after=after,
        steps=steps,
        seconds=seconds,
        train_queries=len(train_ids),
        eval_queries=len(eval_ids),
        metrics={
            "bm25_ndcg10": bm25_ndcg,
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
            "loss": "CachedMultipleNegativesRankingLoss" if loss == "listwise" else "BinaryCrossEntropyLoss",
            "negatives": negatives,
            "epochs": epochs,
            "max_steps": max_steps,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "max_length": max_length,
            **({"mini_batch_size": mini_batch_size} if loss == "listwise" else {}),
            "rerank_depth": rerank_depth,
            "max_positives": max_positives,
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
        "reranker nDCG@10 %.4f -> %.4f on %d held-apart queries (BM25 %.4f; blended at w=%.1f: %.4f)",
        result.ndcg10_before,
        result.ndcg10_after,
        len(eval_ids),
        bm25_ndcg,
        recommended,
        blends[recommended],
    )
    return result
