"""What reranker and embedder training share: their options, the query/corpus selection and hard negatives, the
trainer's common arguments, and the trained directory with its manifest and result."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError

from retrieval import RETRIEVER_MANIFEST, BeirData, InvalidDatasetError, load_beir, split_queries
from training.config import RecipeError, format_errors
from training.data import DatasetError
from training.manifest import library_versions, now_iso
from training.retrievers.mining import CorpusBm25, build_bm25, hard_negatives

SELECTION_FIELDS = frozenset({"train_query_ids", "eval_query_ids", "split", "eval_fraction"})
"""Options that choose the judged queries (recorded in the manifest's ``data``, not its ``hyperparameters``)."""


class RetrieverConfig(BaseModel):
    """Options both retriever trainers take: which judged queries they learn from and are scored on, the model
    they start from and the schedule. Each trainer's config sets its measured defaults and adds its own options.

    Attributes:
        train_query_ids: queries to learn from (default: a seeded ``1 - eval_fraction`` share of judged queries).
        eval_query_ids: held-apart queries (default: judged queries not trained on).
        split: qrels file name under ``qrels/``.
        eval_fraction: share held apart when neither id list is given.
        max_corpus_docs: shrink the corpus (relevant and BM25-near documents kept) for quick runs.
        base_model: catalog name or path of the model to start from.
        epochs / max_steps / batch_size / learning_rate / max_length: training schedule and input size.
        max_positives: a query's best-graded relevant documents trained on (one row each).
        seed: data order, splits and initialisation.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    train_query_ids: list[str] | None = None
    eval_query_ids: list[str] | None = None
    split: str = "train"
    eval_fraction: float = Field(default=0.5, gt=0, lt=1)
    max_corpus_docs: int | None = Field(default=None, ge=1)
    base_model: str = "all-minilm-l6-v2"
    epochs: PositiveFloat
    max_steps: int = -1
    batch_size: PositiveInt
    learning_rate: PositiveFloat
    max_length: int = Field(default=256, ge=8)
    max_positives: int = Field(default=4, ge=1)
    seed: int = 42

    @classmethod
    def parse(cls, options: dict[str, Any]) -> Self:
        """The config of these options (the rest at their defaults); every invalid one is reported at once as a
        :class:`training.RecipeError`."""
        try:
            return cls.model_validate(options)
        except ValidationError as exc:
            raise RecipeError(format_errors(exc)) from exc

    def hyperparameters(self) -> dict[str, Any]:
        """What the manifest records as the run's hyperparameters (the query selection goes under ``data``)."""
        return self.model_dump(exclude=set(SELECTION_FIELDS) | {"base_model", "max_corpus_docs"})


class RetrieverManifest(BaseModel):
    """Self-description of a fine-tuned reranker or embedder directory (``ragswap-retriever.json``)."""

    kind: Literal["reranker", "embedder"]
    base_model: str
    data: dict[str, Any] = Field(default_factory=dict)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    library_versions: dict[str, str] = Field(default_factory=library_versions)
    created_at: str = Field(default_factory=now_iso)

    def write(self, folder: Path) -> Path:
        path = folder / RETRIEVER_MANIFEST
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path

    @classmethod
    def read(cls, folder: Path) -> RetrieverManifest:
        return cls.model_validate_json((folder / RETRIEVER_MANIFEST).read_text())


@dataclass
class RetrieverTrainResult:
    """Outcome of :func:`train_reranker` / :func:`train_embedder`: nDCG@10 on held-apart queries, before/after."""

    output_dir: Path
    ndcg10_before: float
    ndcg10_after: float
    steps: int
    seconds: float
    train_queries: int
    eval_queries: int
    metrics: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["output_dir"] = str(self.output_dir)
        return data


def judged(data: BeirData, ids: list[str] | None) -> list[str]:
    """The given query ids that have judgements (all judged ones when ``None``), sorted."""
    pool = list(data.qrels) if ids is None else [q for q in ids if q in data.qrels]
    return sorted(set(pool))


def limit_corpus(
    data: BeirData, index: CorpusBm25, query_ids: list[str], max_docs: int | None, seed: int
) -> BeirData:
    """Shrink the corpus to ``max_docs`` for fast runs: relevant docs and BM25's top 30 of ``query_ids`` first,
    random others after, so the task stays as hard as on the full corpus around these queries."""
    if max_docs is None or max_docs >= len(data.corpus):
        return data
    keep: dict[str, None] = {}
    for qid in query_ids:
        keep.update(dict.fromkeys(data.qrels[qid]))
    for docs in index.search([data.queries[q] for q in query_ids], k=30):
        keep.update(dict.fromkeys(docs))
    others = [d for d in data.corpus if d not in keep]
    random.Random(seed).shuffle(others)
    chosen = list(keep)[:max_docs] if len(keep) >= max_docs else list(keep) + others[: max_docs - len(keep)]
    return data.subset_corpus(chosen)


def load_judged(data_dir: Path, split: str) -> BeirData:
    """The BEIR folder (``retrieval.load_beir``); a bad one raises training's :class:`DatasetError`."""
    try:
        return load_beir(data_dir, split)
    except InvalidDatasetError as exc:
        raise DatasetError([exc.message]) from exc


def choose_queries(
    data: BeirData,
    train_ids: list[str] | None,
    eval_ids: list[str] | None,
    eval_fraction: float,
    seed: int,
) -> tuple[list[str], list[str]]:
    """(train, held-apart) query ids, never overlapping."""
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


@contextmanager
def stage_bar(description: str, total: int, enabled: bool) -> Iterator[Any]:
    """A progress bar for a stage outside the trainer's own (tqdm, like the trainer's)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=description, disable=not enabled, leave=True)
    try:
        yield bar
    finally:
        bar.close()


def positives(data: BeirData, qid: str, limit: int) -> list[str]:
    """A query's relevant documents in the corpus, best grade first, at most ``limit`` (datasets such as
    NFCorpus judge dozens per query: a few of the best teach as much and keep training time bounded)."""
    judged = data.qrels[qid]
    ranked = sorted((d for d in judged if d in data.corpus), key=lambda d: (-judged[d], d))
    return ranked[:limit]


@dataclass
class JudgedSplit:
    """Judged data ready to train a retriever on: the (possibly shrunk) corpus, its BM25 index (open inside
    :func:`prepare_judged`'s block), the train / held-apart query ids and each training query's BM25 hard
    negatives."""

    data: BeirData
    index: CorpusBm25
    train_ids: list[str]
    eval_ids: list[str]
    negatives: dict[str, list[str]]


@contextmanager
def prepare_judged(
    data_dir: str | Path,
    config: RetrieverConfig,
    *,
    negatives: int,
    negative_skip: int = 0,
    progress: bool,
) -> Iterator[JudgedSplit]:
    """What both trainers do first: seed, use every core, load the BEIR folder, split the queries, index the
    corpus with BM25 (shrunk to ``max_corpus_docs`` around the chosen queries when asked), keep only training
    queries with a relevant document left, and mine ``negatives`` hard negatives per training query (after
    ``negative_skip`` top hits). The index is closed when the block ends (rank other candidates inside it)."""
    import torch
    from transformers import set_seed

    torch.set_num_threads(os.cpu_count() or 1)
    set_seed(config.seed)
    data = load_judged(Path(data_dir), config.split)
    train_ids, eval_ids = choose_queries(
        data, config.train_query_ids, config.eval_query_ids, config.eval_fraction, config.seed
    )
    with stage_bar("indexing the corpus (BM25)", 1, progress) as bar:
        index = build_bm25(data.corpus)
        if config.max_corpus_docs:
            data = limit_corpus(data, index, eval_ids + train_ids, config.max_corpus_docs, config.seed)
            index.close()
            index = build_bm25(data.corpus)
        bar.update(1)
    try:
        train_ids = [q for q in train_ids if any(d in data.corpus for d in data.qrels[q])]
        with stage_bar("mining hard negatives", 1, progress) as bar:
            mined = hard_negatives(
                index, data.queries, data.qrels, train_ids, per_query=negatives, skip_top=negative_skip
            )
            bar.update(1)
        yield JudgedSplit(data, index, train_ids, eval_ids, mined)
    finally:
        index.close()


def trainer_arguments(config: RetrieverConfig, output_dir: str, progress: bool) -> dict[str, Any]:
    """The (sentence-transformers) training arguments both trainers set the same way: the schedule from
    ``config``, no checkpoints, a loss logged every 10 steps, the CPU unless CUDA is there."""
    import torch

    return {
        "output_dir": output_dir,
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps,
        "per_device_train_batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "warmup_steps": 0.1,
        "save_strategy": "no",
        "logging_steps": 10,
        "report_to": [],
        "seed": config.seed,
        "use_cpu": not torch.cuda.is_available(),
        "disable_tqdm": not progress,
    }


@dataclass
class Fitted:
    """What a finished ``trainer.train()`` left: optimizer steps, the logged loss curve and the wall time."""

    steps: int
    loss_curve: list[list[float]]
    seconds: float


def fit(trainer: Any) -> Fitted:
    """Run a (sentence-transformers) trainer to the end of its schedule."""
    started = time.perf_counter()
    trainer.train()
    history = trainer.state.log_history
    return Fitted(
        steps=trainer.state.global_step,
        loss_curve=[[h["step"], h["loss"]] for h in history if "loss" in h],
        seconds=time.perf_counter() - started,
    )


def save_trained(
    model: Any,
    output_dir: str | Path,
    *,
    kind: Literal["reranker", "embedder"],
    config: RetrieverConfig,
    judged: JudgedSplit,
    fitted: Fitted,
    before: float,
    after: float,
    rows: dict[str, int],
    hyperparameters: dict[str, Any],
    metrics: dict[str, float] | None = None,
    manifest_metrics: dict[str, Any] | None = None,
) -> RetrieverTrainResult:
    """Save the trained model with its ``ragswap-retriever.json`` (data, hyperparameters, held-apart figures, loss
    curve) and return the result; ``rows`` counts the training rows by name, ``metrics`` are the trainer's own
    figures (in the result and the manifest), ``manifest_metrics`` further ones for the manifest only."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    result = RetrieverTrainResult(
        output_dir=out,
        ndcg10_before=before,
        ndcg10_after=after,
        steps=fitted.steps,
        seconds=fitted.seconds,
        train_queries=len(judged.train_ids),
        eval_queries=len(judged.eval_ids),
        metrics=dict(metrics or {}),
    )
    RetrieverManifest(
        kind=kind,
        base_model=config.base_model,
        data={
            "beir_sha256": judged.data.fingerprint,
            "split": config.split,
            "corpus_docs": len(judged.data.corpus),
            "train_query_ids": judged.train_ids,
            "eval_query_ids": judged.eval_ids,
            **rows,
        },
        hyperparameters=hyperparameters,
        metrics={
            "ndcg10_before": before,
            "ndcg10_after": after,
            **result.metrics,
            **(manifest_metrics or {}),
            "steps": fitted.steps,
            "wall_seconds": round(fitted.seconds, 2),
            "loss_curve": fitted.loss_curve,
        },
    ).write(out)
    return result
