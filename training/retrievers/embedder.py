"""Adapt the bi-encoder (dense retrieval embedder) to a domain with MultipleNegativesRankingLoss.

Each training row is (query, relevant document, BM25 hard negative); every other document of the batch serves as
an in-batch negative. Quality is nDCG@10 of dense retrieval over the corpus for held-apart queries, before/after.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from retrieval import BeirData
from training.retrievers.common import (
    RetrieverManifest,
    RetrieverTrainResult,
    positives,
    prepare_judged,
    stage_bar,
)
from training.retrievers.mining import hard_negatives

if TYPE_CHECKING:
    from ragswap import ModelSettings

logger = logging.getLogger(__name__)


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
    train_query_ids: list[str] | None = None,
    eval_query_ids: list[str] | None = None,
    split: str = "train",
    eval_fraction: float = 0.5,
    base_model: str = "all-minilm-l6-v2",
    epochs: float = 6.0,
    max_steps: int = -1,
    batch_size: int = 32,
    learning_rate: float = 5e-5,
    max_length: int = 256,
    negative_skip: int = 2,
    max_corpus_docs: int | None = None,
    max_positives: int = 4,
    seed: int = 42,
    progress: bool = True,
) -> RetrieverTrainResult:
    """Fine-tune the sentence-transformers embedder and report dense nDCG@10 on held-apart queries before/after.

    Args:
        data_dir: BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``).
        output_dir: where the trained SentenceTransformer (and ``ragswap-retriever.json``) goes.
        models: the model store ``base_model`` is resolved in (the entry point's ``settings.models``).
        train_query_ids: queries to learn from (default: a seeded ``1 - eval_fraction`` share of judged queries).
        eval_query_ids: held-apart queries (default: judged queries not trained on).
        split: qrels file name under ``qrels/``.
        eval_fraction: share held apart when neither id list is given.
        base_model: catalog name or path of the bi-encoder to start from.
        epochs / max_steps / batch_size / learning_rate / max_length: training schedule and input size; larger
            batches give more in-batch negatives.
        negative_skip: BM25 hits left out before taking the hard negative (top hits are often unjudged positives).
        max_corpus_docs: shrink the corpus (relevant and BM25-near documents kept) for quick runs.
        max_positives: a query's best-graded relevant documents trained on (one row each).
        seed: data order and splits.
        progress: show progress bars.
    """
    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers
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
        negs = hard_negatives(
            judged.index, data.queries, data.qrels, train_ids, per_query=3, skip_top=negative_skip
        )
        bar.update(1)
    train_ds = Dataset.from_dict(_triplets(data, negs, train_ids, max_positives)).shuffle(seed=seed)
    with model_loading():
        model = SentenceTransformer(resolve_model(base_model, models))
    model.max_seq_length = max_length
    evaluator = InformationRetrievalEvaluator(
        queries={q: data.queries[q] for q in eval_ids},
        corpus=dict(data.corpus),
        relevant_docs={q: set(data.qrels[q]) & set(data.corpus) for q in eval_ids},
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
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ragswap-embedder-") as scratch:
        args = SentenceTransformerTrainingArguments(
            output_dir=scratch,
            num_train_epochs=epochs,
            max_steps=max_steps,
            per_device_train_batch_size=batch_size,
            learning_rate=learning_rate,
            warmup_steps=0.1,
            batch_sampler=BatchSamplers.NO_DUPLICATES,
            save_strategy="no",
            logging_steps=10,
            report_to=[],
            seed=seed,
            use_cpu=not torch.cuda.is_available(),
            disable_tqdm=not progress,
        )
        trainer = SentenceTransformerTrainer(
            model=model, args=args, train_dataset=train_ds, loss=MultipleNegativesRankingLoss(model)
        )
        trainer.train()
        steps = trainer.state.global_step
        history = trainer.state.log_history
    seconds = time.perf_counter() - started
    after = evaluator(model)
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
    )
    RetrieverManifest(
        kind="embedder",
        base_model=base_model,
        data={
            "beir_sha256": data.fingerprint,
            "split": split,
            "corpus_docs": len(data.corpus),
            "train_query_ids": train_ids,
            "eval_query_ids": eval_ids,
            "train_triplets": len(train_ds),
        },
        hyperparameters={
            "loss": "MultipleNegativesRankingLoss",
            "epochs": epochs,
            "max_steps": max_steps,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "max_length": max_length,
            "negative_skip": negative_skip,
            "max_positives": max_positives,
            "seed": seed,
        },
        metrics={
            "ndcg10_before": result.ndcg10_before,
            "ndcg10_after": result.ndcg10_after,
            "steps": steps,
            "wall_seconds": round(seconds, 2),
            "loss_curve": [[h["step"], h["loss"]] for h in history if "loss" in h],
        },
    ).write(out)
    logger.info(
        "embedder nDCG@10 %.4f -> %.4f on %d held-apart queries",
        result.ndcg10_before,
        result.ndcg10_after,
        len(eval_ids),
    )
    return result
