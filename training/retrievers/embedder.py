"""Adapt the bi-encoder (dense retrieval embedder) to a domain with MultipleNegativesRankingLoss.

Each training row is (query, relevant document, BM25 hard negative); every other document of the batch serves as
an in-batch negative. Quality is nDCG@10 of dense retrieval over the corpus for held-apart queries, before/after.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import NonNegativeInt, PositiveFloat, PositiveInt

from retrieval import BeirData
from training.retrievers.common import (
    RetrieverConfig,
    RetrieverTrainResult,
    fit,
    positives,
    prepare_judged,
    save_trained,
    trainer_arguments,
)

if TYPE_CHECKING:
    from ragswap import ModelSettings

logger = logging.getLogger(__name__)


class EmbedderConfig(RetrieverConfig):
    """:func:`train_embedder`'s options (the shared ones: :class:`RetrieverConfig`).

    Attributes:
        batch_size: larger batches give more in-batch negatives.
        negative_skip: BM25 hits left out before taking the hard negatives (top hits are often unjudged
            positives).
    """

    epochs: PositiveFloat = 6.0
    batch_size: PositiveInt = 32
    learning_rate: PositiveFloat = 5e-5
    negative_skip: NonNegativeInt = 2


def _triplets(
    data: BeirData, negatives: dict[str, list[str]], query_ids: list[str], max_positives: int
) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {"anchor": [], "positive": [], "negative": []}
    for qid in query_ids:
        negs = negatives[qid]
        if not negs:
            continue
        for i, doc in enumerate(positives(data, qid, max_positives)):
            rows["anchor"].append(data.queries[qid])
            rows["positive"].append(data.corpus[doc])
            rows["negative"].append(data.corpus[negs[i % len(negs)]])
    return rows


def train_embedder(
    data_dir: str | Path,
    output_dir: str | Path,
    *,
    models: ModelSettings,
    config: EmbedderConfig | None = None,
    progress: bool = True,
) -> RetrieverTrainResult:
    """Fine-tune the sentence-transformers embedder and report dense nDCG@10 on held-apart queries before/after.

    Args:
        data_dir: BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``).
        output_dir: where the trained SentenceTransformer (and ``ragswap-retriever.json``) goes.
        models: the model store ``config.base_model`` is resolved in (the entry point's ``settings.models``).
        config: queries, starting model and schedule (default: :class:`EmbedderConfig`'s measured defaults).
        progress: show progress bars.
    """
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    from ragswap import model_loading, resolve_model

    config = config or EmbedderConfig()
    with prepare_judged(
        data_dir, config, negatives=3, negative_skip=config.negative_skip, progress=progress
    ) as judged:
        data = judged.data
    rows = _triplets(data, judged.negatives, judged.train_ids, config.max_positives)
    train_ds = Dataset.from_dict(rows).shuffle(seed=config.seed)
    with model_loading():
        model = SentenceTransformer(resolve_model(config.base_model, models))
    model.max_seq_length = config.max_length
    evaluator = InformationRetrievalEvaluator(
        queries={q: data.queries[q] for q in judged.eval_ids},
        corpus=dict(data.corpus),
        relevant_docs={q: set(data.qrels[q]) & set(data.corpus) for q in judged.eval_ids},
        name="heldout",
        ndcg_at_k=[10],
        mrr_at_k=[10],
        accuracy_at_k=[1, 10],
        precision_recall_at_k=[10],
        map_at_k=[100],
        batch_size=64,
        show_progress_bar=progress,
        write_csv=False,
    )
    before = evaluator(model)
    key = str(evaluator.primary_metric)  # known once the evaluator has run
    with tempfile.TemporaryDirectory(prefix="ragswap-embedder-") as scratch:
        args = SentenceTransformerTrainingArguments(
            **trainer_arguments(config, scratch, progress), batch_sampler=BatchSamplers.NO_DUPLICATES
        )
        fitted = fit(
            SentenceTransformerTrainer(
                model=model, args=args, train_dataset=train_ds, loss=MultipleNegativesRankingLoss(model)
            )
        )
    result = save_trained(
        model,
        output_dir,
        kind="embedder",
        config=config,
        judged=judged,
        fitted=fitted,
        before=float(before[key]),
        after=float(evaluator(model)[key]),
        rows={"train_triplets": len(train_ds)},
        hyperparameters={"loss": "MultipleNegativesRankingLoss", **config.hyperparameters()},
    )
    logger.info(
        "embedder nDCG@10 %.4f -> %.4f on %d held-apart queries",
        result.ndcg10_before,
        result.ndcg10_after,
        result.eval_queries,
    )
    return result
