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
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import PositiveFloat, PositiveInt

from retrieval import BeirData
from training.retrievers.common import (
    RetrieverConfig,
    RetrieverTrainResult,
    fit,
    positives,
    prepare_judged,
    save_trained,
    stage_bar,
    trainer_arguments,
)
from training.retrievers.mining import CorpusBm25

if TYPE_CHECKING:
    from ragswap import ModelSettings

logger = logging.getLogger(__name__)
BLEND_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


class RerankerConfig(RetrieverConfig):
    """:func:`train_reranker`'s options (the shared ones: :class:`RetrieverConfig`).

    Attributes:
        base_model: a domain-trained embedder (``train_embedder``'s output) is a better start than the
            off-the-shelf one (measured: docs/training.md).
        negatives: BM25 hard negatives per query (label 0) next to its relevant documents (label 1).
        mini_batch_size: (query, passage) pairs run through the model at once by the listwise loss, which
            caches gradients (GradCache) so a step's ``batch_size * (1 + 2 * negatives)`` pairs never all hold
            activations together: same gradients as scoring them at once, memory bounded by this number
            (measured: docs/training.md). Without it a default step (240 pairs of 256 tokens) took over 18 GB.
        rerank_depth: BM25 candidates reranked in the evaluation.
        loss: ``bce`` (each pair labelled relevant or not) or ``listwise`` (each positive scored against its
            ``negatives`` hard negatives and the batch's other passages, softmax cross-entropy).
    """

    epochs: PositiveFloat = 3.0
    batch_size: PositiveInt = 16
    learning_rate: PositiveFloat = 1e-4
    negatives: PositiveInt = 7
    mini_batch_size: PositiveInt = 32
    rerank_depth: PositiveInt = 30
    loss: Literal["listwise", "bce"] = "listwise"

    def hyperparameters(self) -> dict[str, Any]:
        loss = "CachedMultipleNegativesRankingLoss" if self.loss == "listwise" else "BinaryCrossEntropyLoss"
        params = super().hyperparameters()
        if self.loss != "listwise":
            del params["mini_batch_size"]
        return params | {"loss": loss}


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
    config: RerankerConfig | None = None,
    progress: bool = True,
) -> RetrieverTrainResult:
    """Train a cross-encoder reranker and report nDCG@10 of reranking BM25's top ``rerank_depth`` before/after.

    Args:
        data_dir: BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``).
        output_dir: where the trained CrossEncoder (and ``ragswap-retriever.json``) goes.
        models: the model store ``config.base_model`` is resolved in (the entry point's ``settings.models``).
        config: queries, starting model, loss and schedule (default: :class:`RerankerConfig`'s measured
            defaults).
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

    from ragswap import model_loading, resolve_model

    config = config or RerankerConfig()
    with prepare_judged(data_dir, config, negatives=config.negatives, progress=progress) as judged:
        data = judged.data
        candidates = first_stage(data, judged.index, judged.eval_ids, config.rerank_depth)
    qrels = {q: data.qrels[q] for q in judged.eval_ids}
    bm25_ndcg = _ranked_ndcg({q: dict(row) for q, row in candidates.items()}, qrels)
    rows = (
        _lists(data, judged.negatives, judged.train_ids, config.negatives, config.max_positives)
        if config.loss == "listwise"
        else _pairs(data, judged.negatives, judged.train_ids, config.max_positives)
    )
    train_ds = Dataset.from_dict(rows).shuffle(seed=config.seed)
    with model_loading():
        model = CrossEncoder(
            resolve_model(config.base_model, models), num_labels=1, max_length=config.max_length
        )
    before = _ranked_ndcg(
        score_candidates(
            model, data, candidates, desc="scoring held-apart candidates (untrained)", progress=progress
        ),
        qrels,
    )
    with tempfile.TemporaryDirectory(prefix="ragswap-reranker-") as scratch:
        args = CrossEncoderTrainingArguments(
            **trainer_arguments(config, scratch, progress), weight_decay=0.01, dataloader_drop_last=False
        )
        loss = (
            CachedMultipleNegativesRankingLoss(
                model, num_negatives=config.negatives, mini_batch_size=config.mini_batch_size
            )
            if config.loss == "listwise"
            else BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(float(config.negatives)))
        )
        fitted = fit(CrossEncoderTrainer(model=model, args=args, train_dataset=train_ds, loss=loss))
    trained = score_candidates(
        model, data, candidates, desc="scoring held-apart candidates", progress=progress
    )
    blends = blend_grid(trained, candidates, qrels)
    recommended = max(blends, key=lambda w: (blends[w], w))
    result = save_trained(
        model,
        output_dir,
        kind="reranker",
        config=config,
        judged=judged,
        fitted=fitted,
        before=before,
        after=_ranked_ndcg(trained, qrels),
        rows={"train_pairs": len(train_ds)},
        hyperparameters=config.hyperparameters(),
        metrics={
            "bm25_ndcg10": bm25_ndcg,
            "blended_ndcg10": blends[recommended],
            "recommended_rerank_weight": recommended,
        },
        manifest_metrics={"blend_ndcg10": {str(w): round(v, 4) for w, v in blends.items()}},
    )
    logger.info(
        "reranker nDCG@10 %.4f -> %.4f on %d held-apart queries (BM25 %.4f; blended at w=%.1f: %.4f)",
        result.ndcg10_before,
        result.ndcg10_after,
        result.eval_queries,
        bm25_ndcg,
        recommended,
        blends[recommended],
    )
    return result
