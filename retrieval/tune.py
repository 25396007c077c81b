"""Per-collection tuning: learn a collection's search settings from the user's judged queries.

The judged queries are split once, by a hash of their ids, into a tuning part and a held-apart part. Every
choice is made on the tuning part only:

1. BM25 ``k1``/``b``: BM25 alone over a temporary Qdrant Edge shard of the collection's sections (exact, the
   collection's own IDF statistics), for collections of up to :data:`BM25_MAX_SECTIONS` sections.
2. Fusion (DBSF, RRF ``k``, weighted RRF) and candidate depth: hybrid search on the collection.
3. With a reranker configured: rerank depth and blend weight (cross-encoder scores computed once per pair).

The held-apart part is then searched with the settings the collection had before and with the chosen ones;
the report gives nDCG@10, recall@100 and MRR@10 of both with 95 % bootstrap confidence intervals. The chosen
settings are stored with the collection (``CollectionSpec.search``), where ``/v1/retrieve``, RAG chat and
evaluations pick them up for every request that does not set them itself, unless they rank the held-apart queries
worse than the previous settings: a grid chosen on a few hundred queries can follow their noise (measured on
SciFact: docs/retrieval.md), so then the previous settings stay and the report says why
(``TuneOptions.store_if_worse`` stores them anyway). A tuning that fails leaves the previous settings in place.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from retrieval.beir import Qrels, id_byte
from retrieval.errors import TuneRefusedError
from retrieval.models import Reranker
from retrieval.search import SearchQuery
from retrieval.service import RetrievalService
from retrieval.settings import Bm25Settings, FusionName
from retrieval.sparse import Bm25Index
from retrieval.store import CollectionSpec, SearchOverrides

logger = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]
"""Called with (stage, done, total)."""
METRICS = ("ndcg@10", "recall@100", "mrr@10")
BM25_GRID = [(k1, b) for k1 in (0.9, 1.2, 1.5, 2.0) for b in (0.4, 0.6, 0.75, 0.9)]
BM25_MAX_SECTIONS = 200_000
"""Above this the BM25 grid is skipped (each point of it re-weighs every section)."""
FUSION_GRID: list[tuple[FusionName, int, float]] = [
    ("dbsf", 60, 0.5),
    ("rrf", 2, 0.5),
    ("rrf", 10, 0.5),
    ("rrf", 60, 0.5),
    ("weighted", 60, 0.3),
    ("weighted", 60, 0.7),
]
CANDIDATES = (50, 100, 200)
RERANK_DEPTHS = (10, 20, 30, 50)
RERANK_WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
DEPTH = 100
"""Documents ranked per query (recall@100 needs 100)."""


class TuneOptions(BaseModel):
    """How to tune (the same for the CLI, the HTTP API and the benchmark)."""

    model_config = ConfigDict(extra="forbid")

    held_out: float = Field(default=0.3, gt=0, lt=1)
    """Share of the judged queries held apart for the report; they choose nothing."""
    seed: int = 0
    """Which queries are held apart (the split hashes ``seed`` with each query id)."""
    min_tuning: int = Field(default=30, ge=1)
    """Fewer tuning queries than this and tuning is refused: the choice would follow noise."""
    min_held_out: int = Field(default=20, ge=1)
    """Fewer held-apart queries than this and tuning is refused: the report could not tell a gain from noise."""
    bm25: bool = True
    """Tune BM25 ``k1``/``b`` (re-weighs the collection's BM25 vectors when they change)."""
    rerank: bool = True
    """With a reranker configured: tune its depth and blend weight."""
    dry_run: bool = False
    """Report what would be chosen; store nothing."""
    store_if_worse: bool = False
    """Store the chosen settings even when they rank the held-apart queries worse (nDCG@10) than the previous
    ones; by default those are kept, so tuning never leaves a collection worse on queries it did not choose on."""
    resamples: int = Field(default=1000, ge=100)
    """Bootstrap resamples of the confidence intervals."""
    candidates: list[int] = Field(default_factory=lambda: list(CANDIDATES), min_length=1)
    """First-stage depths tried with each fusion."""
    rerank_depths: list[int] = Field(default_factory=lambda: list(RERANK_DEPTHS), min_length=1)
    """Rerank depths tried (the cross-encoder scores each tuning query's deepest candidates once)."""


class MetricCI(BaseModel):
    mean: float
    low: float
    high: float


class TuneReport(BaseModel):
    """What ``collections tune`` measured and chose."""

    collection: str
    judged_queries: int
    """Queries with a text and at least one judged document that is in the collection."""
    unusable_queries: int
    """Judged queries left out: no text, or none of their relevant documents in the collection."""
    tuning_queries: int
    held_out_queries: int
    before: dict[str, MetricCI]
    after: dict[str, MetricCI]
    """The held-apart queries with the previous and the chosen settings."""
    previous: dict[str, Any]
    chosen: dict[str, Any]
    grid: dict[str, float] = Field(default_factory=dict)
    """nDCG@10 on the tuning queries of every setting tried."""
    notes: list[str] = Field(default_factory=list)
    stored: bool
    seconds: float


@dataclass
class _Judged:
    queries: dict[str, str]
    qrels: Qrels
    vectors: dict[str, np.ndarray]


def split(query_ids: list[str], held_out: float, seed: int) -> tuple[list[str], list[str]]:
    """(tuning, held-apart) by a hash of (seed, id): stable as queries are added or removed."""
    cut = round(held_out * 256)
    held = sorted(q for q in query_ids if id_byte(f"{seed}:{q}") < cut)
    return sorted(set(query_ids) - set(held)), held


def _ci(values: list[float], resamples: int) -> MetricCI:
    from eval import bootstrap_ci

    low, high = bootstrap_ci(values, resamples=resamples)
    return MetricCI(mean=round(float(np.mean(values)), 4), low=round(low, 4), high=round(high, 4))


class _Scorer:
    """Ranks judged queries with given search options; reranker scores are kept for the whole run."""

    def __init__(self, service: RetrievalService, name: str, judged: _Judged) -> None:
        self.service = service
        self.name = name
        self.judged = judged
        self._memo: dict[tuple[str, str], float] = {}
        self._reranker: Reranker | None = None
        reranker = service.reranker
        if reranker is not None:
            score = reranker.score

            def memoized(query: str, passages: list[str], batch_size: int = 32) -> np.ndarray:
                todo = [p for p in dict.fromkeys(passages) if (query, p) not in self._memo]
                if todo:
                    self._memo.update(
                        zip(((query, p) for p in todo), score(query, todo, batch_size).tolist(), strict=True)
                    )
                return np.asarray([self._memo[(query, p)] for p in passages], dtype=np.float32)

            self._reranker = reranker
            self._score = score
            reranker.score = memoized  # type: ignore[method-assign]

    def close(self) -> None:
        if self._reranker is not None:
            self._reranker.score = self._score  # type: ignore[method-assign]

    def ranking(self, qid: str, **options: Any) -> list[str]:
        query = SearchQuery(
            collection=self.name,
            query=self.judged.queries[qid],
            top_k=DEPTH,
            group_by="document",
            vector=self.judged.vectors.get(qid),
            **options,
        )
        return self.service.rank_documents(query)

    def per_query(self, qids: list[str], **options: Any) -> list[float]:
        """nDCG@10 of each query."""
        from eval import ndcg_at_k

        return [ndcg_at_k(self.ranking(q, **options), self.judged.qrels[q], 10) for q in qids]

    def summary(self, qids: list[str], resamples: int, **options: Any) -> dict[str, MetricCI]:
        from eval import rank_metrics

        rows = [rank_metrics(self.ranking(q, **options), self.judged.qrels[q]) for q in qids]
        return {m: _ci([r[m] for r in rows], resamples) for m in METRICS}


def _judged(
    service: RetrievalService, name: str, queries: dict[str, str], qrels: Qrels
) -> tuple[_Judged, int]:
    """The usable judged queries (text + a relevant document in the collection) and their embeddings."""
    candidates = {q: rel for q, rel in qrels.items() if rel and queries.get(q, "").strip()}
    wanted = sorted({d for rel in candidates.values() for d in rel})
    present = {d for d, sections in service.store.sections_of(name, wanted).items() if sections}
    usable = {q: {d: g for d, g in rel.items()} for q, rel in candidates.items() if present & set(rel)}
    spec = service.store.spec(name)
    ids = sorted(usable)
    embedder = service.embedder(spec)
    matrix = embedder.encode([queries[q] for q in ids]) if ids else np.zeros((0, spec.dimension))
    judged = _Judged({q: queries[q] for q in ids}, usable, dict(zip(ids, matrix, strict=True)))
    return judged, len(qrels) - len(usable)


def _tune_bm25(
    service: RetrievalService, spec: CollectionSpec, judged: _Judged, qids: list[str], progress: Progress
) -> tuple[Bm25Settings, dict[str, float], list[str]]:
    """(k1, b) by BM25-alone nDCG@10 on the tuning queries, over the collection's sections (same IDF)."""
    from eval import ndcg_at_k

    sections: list[tuple[str, str, str]] = []
    for batch in service.store.scroll_sections(spec.name):
        sections.extend(batch)
        if len(sections) > BM25_MAX_SECTIONS:
            return spec.bm25, {}, [f"BM25 k1/b kept: more than {BM25_MAX_SECTIONS} sections"]
    texts = [text for _, _, text in sections]
    asked = [judged.queries[q] for q in qids]
    grid: dict[str, float] = {}
    best, best_score = spec.bm25, -1.0
    for n, (k1, b) in enumerate(BM25_GRID):
        params = spec.bm25.model_copy(update={"k1": k1, "b": b})
        with Bm25Index(texts, params) as index:
            found = index.search(asked, 2 * DEPTH)
        total = 0.0
        for qid, rows in zip(qids, found, strict=True):
            ranked = list(dict.fromkeys(sections[row][1] for row, _ in rows))
            total += ndcg_at_k(ranked, judged.qrels[qid], 10)
        score = grid[f"bm25 k1={k1} b={b}"] = round(total / len(qids), 4)
        if score > best_score or (score == best_score and (k1, b) == (spec.bm25.k1, spec.bm25.b)):
            best, best_score = params, score
        progress("bm25", n + 1, len(BM25_GRID))
    return best, grid, []


def tune_collection(
    service: RetrievalService,
    name: str,
    queries: dict[str, str],
    qrels: Qrels,
    options: TuneOptions | None = None,
    progress: Progress | None = None,
) -> TuneReport:
    """Learn ``name``'s search settings from judged queries (see the module docstring).

    Raises:
        TuneRefusedError: too few usable judged queries for a tuning and a held-apart part.
        CollectionNotFoundError: no such collection.
    """
    options = options or TuneOptions()
    report_progress: Progress = progress or (lambda stage, done, total: None)
    started = time.perf_counter()
    spec = service.store.spec(name)
    judged, unusable = _judged(service, name, queries, qrels)
    tune_ids, held_ids = split(sorted(judged.qrels), options.held_out, options.seed)
    if len(tune_ids) < options.min_tuning or len(held_ids) < options.min_held_out:
        raise TuneRefusedError(
            f"too few judged queries to tune {name!r} honestly: {len(judged.qrels)} usable "
            f"({unusable} of {len(qrels)} judged left out: no text or no relevant document in the collection) "
            f"give {len(tune_ids)} tuning and {len(held_ids)} held-apart queries; at least {options.min_tuning} "
            f"and {options.min_held_out} are needed. The untuned defaults are measured to generalise "
            "(docs/retrieval.md)",
            param="qrels",
        )
    scorer = _Scorer(service, name, judged)
    notes: list[str] = []
    grid: dict[str, float] = {}
    previous = {"bm25": spec.bm25.model_dump(), "search": spec.search.model_dump(exclude_none=True)}
    reweighed = False
    try:
        report_progress("baseline", 0, len(held_ids))
        before = scorer.summary(held_ids, options.resamples)
        chosen_bm25 = spec.bm25
        if options.bm25:
            chosen_bm25, bm25_grid, bm25_notes = _tune_bm25(service, spec, judged, tune_ids, report_progress)
            grid.update(bm25_grid)
            notes.extend(bm25_notes)
        working = spec.model_copy(update={"bm25": chosen_bm25})
        if chosen_bm25 != spec.bm25 and not options.dry_run:
            report_progress("re-weighing BM25", 0, 1)
            reweighed = True
            service.update_search_settings(name, working)
        elif chosen_bm25 != spec.bm25:
            notes.append("dry run: fusion tuned with the stored BM25 parameters")
        fusion, fusion_grid = _tune_fusion(scorer, tune_ids, options.candidates, report_progress)
        grid.update(fusion_grid)
        overrides = SearchOverrides(**fusion)
        if service.reranker is not None and options.rerank:
            rerank, rerank_grid = _tune_rerank(
                scorer, tune_ids, fusion, options.rerank_depths, report_progress
            )
            grid.update(rerank_grid)
            overrides = overrides.model_copy(update=rerank)
        chosen = {"bm25": chosen_bm25.model_dump(), "search": overrides.model_dump(exclude_none=True)}
        report_progress("held-apart", 0, len(held_ids))
        after = scorer.summary(held_ids, options.resamples, **_explicit(overrides))
        worse = after["ndcg@10"].mean < before["ndcg@10"].mean
        if worse:
            notes.append(
                f"the chosen settings rank the held-apart queries worse (nDCG@10 {before['ndcg@10'].mean:.4f} "
                f"-> {after['ndcg@10'].mean:.4f}): "
                + (
                    "stored anyway (store_if_worse)"
                    if options.store_if_worse and not options.dry_run
                    else "the previous settings are kept"
                )
            )
        stored = not options.dry_run and (not worse or options.store_if_worse)
        if stored:
            service.update_search_settings(
                name, working.model_copy(update={"search": overrides, "tuning": None})
            )
        elif reweighed:
            service.update_search_settings(name, spec)
    except BaseException:
        if reweighed:
            service.update_search_settings(name, spec)
        raise
    finally:
        scorer.close()
    report = TuneReport(
        collection=name,
        judged_queries=len(judged.qrels),
        unusable_queries=unusable,
        tuning_queries=len(tune_ids),
        held_out_queries=len(held_ids),
        before=before,
        after=after,
        previous=previous,
        chosen=chosen,
        grid=grid,
        notes=notes,
        stored=stored,
        seconds=round(time.perf_counter() - started, 1),
    )
    if stored:
        final = service.store.spec(name)
        summary = report.model_dump(exclude={"grid"})
        service.store.save_spec(final.model_copy(update={"tuning": summary}))
    logger.info(
        "tuned collection",
        extra={
            "collection": name,
            "before": before["ndcg@10"].mean,
            "after": after["ndcg@10"].mean,
            "chosen": chosen,
        },
    )
    return report


def _explicit(overrides: SearchOverrides) -> dict[str, Any]:
    return overrides.model_dump(exclude_none=True)


def _tune_fusion(
    scorer: _Scorer, qids: list[str], candidates: list[int], progress: Progress
) -> tuple[dict[str, Any], dict[str, float]]:
    grid: dict[str, float] = {}
    best: dict[str, Any] = {}
    best_score = -1.0
    configs = [(f, k, w, n) for n in candidates for f, k, w in FUSION_GRID]
    for i, (fusion, k, w, n) in enumerate(configs):
        options = {
            "mode": "hybrid",
            "fusion": fusion,
            "rrf_k": k,
            "weight": w,
            "candidates": n,
            "rerank": False,
        }
        score = round(float(np.mean(scorer.per_query(qids, **options))), 4)
        label = (
            f"{fusion}"
            + (f" k={k}" if fusion != "dbsf" else "")
            + (f" w={w}" if fusion == "weighted" else "")
        )
        grid[f"{label} candidates={n}"] = score
        if score > best_score:
            best_score = score
            best = {"fusion": fusion, "rrf_k": k, "weight": w, "candidates": n}
        progress("fusion", i + 1, len(configs))
    return best, grid


def _tune_rerank(
    scorer: _Scorer, qids: list[str], fusion: dict[str, Any], depths: list[int], progress: Progress
) -> tuple[dict[str, Any], dict[str, float]]:
    grid: dict[str, float] = {}
    best: dict[str, Any] = {}
    best_score = -1.0
    configs = [(d, w) for d in sorted(depths, reverse=True) for w in RERANK_WEIGHTS]
    for i, (depth, weight) in enumerate(configs):
        options = {"mode": "hybrid", **fusion, "rerank": True, "rerank_depth": depth, "rerank_weight": weight}
        score = round(float(np.mean(scorer.per_query(qids, **options))), 4)
        grid[f"rerank depth={depth} weight={weight}"] = score
        if score > best_score:
            best_score = score
            best = {"rerank_depth": depth, "rerank_weight": weight}
        progress("rerank", i + 1, len(configs))
    return best, grid
