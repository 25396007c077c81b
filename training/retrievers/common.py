"""What reranker and embedder training share: the result, its manifest, and the query/corpus selection."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from retrieval import RETRIEVER_MANIFEST, BeirData, InvalidDatasetError, load_beir, split_queries
from training.data import DatasetError
from training.manifest import library_versions, now_iso
from training.retrievers.mining import CorpusBm25, build_bm25


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
    :func:`prepare_judged`'s block) and the train / held-apart query ids."""

    data: BeirData
    index: CorpusBm25
    train_ids: list[str]
    eval_ids: list[str]


@contextmanager
def prepare_judged(
    data_dir: Path,
    split: str,
    *,
    train_query_ids: list[str] | None,
    eval_query_ids: list[str] | None,
    eval_fraction: float,
    max_corpus_docs: int | None,
    seed: int,
    progress: bool,
) -> Iterator[JudgedSplit]:
    """What both trainers do first: load the BEIR folder, split the queries, index the corpus with BM25 (shrunk
    to ``max_corpus_docs`` around the chosen queries when asked), and keep only training queries with a relevant
    document left. The index is closed when the block ends (mine negatives and candidates inside it)."""
    data = load_judged(data_dir, split)
    train_ids, eval_ids = choose_queries(data, train_query_ids, eval_query_ids, eval_fraction, seed)
    with stage_bar("indexing the corpus (BM25)", 1, progress) as bar:
        index = build_bm25(data.corpus)
        if max_corpus_docs:
            data = limit_corpus(data, index, eval_ids + train_ids, max_corpus_docs, seed)
            index.close()
            index = build_bm25(data.corpus)
        bar.update(1)
    try:
        train_ids = [q for q in train_ids if any(d in data.corpus for d in data.qrels[q])]
        yield JudgedSplit(data, index, train_ids, eval_ids)
    finally:
        index.close()
