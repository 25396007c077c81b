"""The embedded store: Qdrant Edge (the Qdrant engine in this process), one shard directory per collection.

    <root>/.lock                      held (flock) while a process has the store open
    <root>/<collection>/collection.json   the CollectionSpec (written atomically)
    <root>/<collection>/commit.json       the last completed write (``seq``) and removals in progress
    <root>/<collection>/shard/            the Edge shard: segments, WAL, HNSW and payload indexes

What it guarantees:

- **Durability**: every update goes through Edge's write-ahead log before it is acknowledged; a killed process
  finds all acknowledged updates on reopening.
- **Whole documents**: each engine update holds whole documents only, and the WAL replays an update whole, so a
  crash leaves every document as it was or fully written. Reads see every document whole too (see
  :class:`_View`): a write is invisible until it has completed, its replaced versions disappear in the same
  instant as its new ones appear, and a read that overlapped a change of view is run again. ``commit.json``
  records removals in progress so that a crash between a write and its removals is finished on reopening; a
  write that fails in this process removes what it had written.
- **One process**: the directory lock makes a second process fail at once with :class:`StoreBusyError`; share
  collections between processes through a Qdrant server (``retrieval.url``). Threads of one process may search
  and write concurrently (the engine is thread-safe; writes to one collection are serialised here).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ragswap import write_atomic
from retrieval.errors import CollectionExistsError, CollectionNotFoundError, StoreBusyError
from retrieval.settings import PayloadIndexType, RetrievalSettings
from retrieval.sparse import SparseVector
from retrieval.store.base import (
    DENSE,
    SPARSE,
    SYSTEM_INDEXES,
    CollectionSpec,
    PointData,
    QueryResult,
    StoredHit,
    StoredSection,
    StoreQuery,
    check_name,
    document_batches,
    facet_sum,
    stored_hit,
    stored_section,
)

logger = logging.getLogger(__name__)
SPEC_FILE = "collection.json"
COMMIT_FILE = "commit.json"
SHARD_DIR = "shard"
SHARE_HINT = "use the Qdrant server backend (retrieval.url) to share collections between processes"
MAX_SEGMENT_KB = 300_000
"""Edge's optimizer merges small segments up to this size (~100k two-chunk sections of 384-d vectors): merges, each
re-indexing the merged segment, stay bounded, so the cost of writing a point does not grow with the collection."""
MERGE_ABOVE_SEGMENTS = 32
"""Edge's optimizer merges segments only once a collection has more than this many. Each optimizer run then indexes
just the points written since the last one (a segment of ~``embedded.index_threshold`` points: 7-10 s at 20k
here) instead of merging them into an indexed segment and re-indexing all of it (27-33 s, measured: the cost of
a write grew with the segment, up to ``MAX_SEGMENT_KB``). Searches visit every segment: at 1M chunks (25
segments) hybrid search stays within the latency budget (docs/retrieval.md); beyond 32 segments merges bound the
count."""
VACUUM_FRACTION = 0.05
"""Edge's optimizer rewrites a segment once this share of its points is deleted (replaced or removed sections);
until then their terms still count in BM25's IDF, as on a Qdrant server. A write that removes this share of a
collection runs the optimizer, so IDF reflects the live documents again."""
READ_ATTEMPTS = 3
"""Reads run without waiting for writes; one that overlapped this many changes of view waits for the write."""
T = TypeVar("T")


def engine_version() -> str:
    from importlib.metadata import version

    return f"qdrant-edge-py {version('qdrant-edge-py')}"


def _edge() -> Any:
    import qdrant_edge

    return qdrant_edge


def _schema(kind: PayloadIndexType) -> Any:
    edge = _edge()
    if kind == "integer":
        return edge.IntegerIndexParams(lookup=True, range=True)
    return {
        "keyword": edge.PayloadSchemaType.Keyword,
        "float": edge.PayloadSchemaType.Float,
        "bool": edge.PayloadSchemaType.Bool,
    }[kind]


def _busy(path: Path) -> StoreBusyError:
    return StoreBusyError(f"the embedded retrieval store {path} is open in another process; {SHARE_HINT}")


@dataclass(frozen=True)
class _View:
    """What reads of a collection may see while a write goes through its phases. Points carry the ``seq`` of
    their write. A write publishes a new view (a new object) at each phase:

    - ``writing``: its points (``seq`` > ``committed``) are hidden until every update has gone in;
    - ``hidden``: its replaced sections, hidden from the instant its own points show, while they are deleted
      (a deletion spanning segments is not atomic in the engine, so it must not be seen half-done);
    - idle: nothing to hide, no filter.

    A read builds its filter from the view it finds, and is run again if the view changed before it returned
    (the filter of one phase is not right for the next one)."""

    committed: int
    """``seq`` of the last completed write."""
    writing: bool = False
    hidden: tuple[str, ...] = ()

    def restrict(self, edge: Any, flt: Any) -> Any:
        """``flt`` restricted to what this view shows."""
        if not self.writing and not self.hidden:
            return flt
        must = [flt] if flt is not None else []
        if self.writing:
            must.append(edge.FieldCondition(key="seq", range=edge.RangeFloat(lte=self.committed)))
        must_not = [edge.HasIdCondition(set(self.hidden))] if self.hidden else None
        return edge.Filter(must=must or None, must_not=must_not)


class _Collection:
    """One open shard, its spec and its write state."""

    def __init__(self, folder: Path, spec: CollectionSpec, shard: Any) -> None:
        self.folder = folder
        self.spec = spec
        self.shard = shard
        self.write_lock = threading.Lock()
        self.view = _View(committed=0)
        self.removed = 0
        """Points removed since the optimizer last ran."""
        self.unindexed = 0
        """Points written since the optimizer last ran, kept in the commit record across restarts. Edge's own
        ``indexed_vectors_count`` cannot tell: it counts the sparse (BM25) vectors too, which are indexed as they
        are written, so it equals the point count before any HNSW exists."""

    def read_commit(self) -> dict[str, Any]:
        path = self.folder / COMMIT_FILE
        return json.loads(path.read_text()) if path.is_file() else {"seq": 0}

    def write_commit(self, seq: int, removing: list[str] | None = None) -> None:
        record: dict[str, Any] = {"seq": seq, "unindexed": self.unindexed}
        if removing:
            record["removing"] = removing
        write_atomic(self.folder / COMMIT_FILE, json.dumps(record))


class EdgeStore:
    """The :class:`~retrieval.store.base.ChunkStore` of the embedded default."""

    def __init__(self, root: Path, settings: RetrievalSettings) -> None:
        self.root = root.expanduser()
        self.settings = settings
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._lock_fd)
            raise _busy(self.root) from exc
        self._guard = threading.RLock()
        self._collections: dict[str, _Collection] = {}
        try:
            self._open_all()
        except BaseException:
            self.close()
            raise

    # -- lifecycle ---------------------------------------------------------------------------------------
    def _open_all(self) -> None:
        if (self.root / "qdrant").is_dir():
            logger.warning(
                "ignoring %s: collections of the previous embedded store (qdrant-client local mode) are not "
                "read by the Qdrant Edge store; re-ingest their documents",
                self.root / "qdrant",
            )
        for folder in sorted(self.root.iterdir()):
            if folder.name.startswith("."):
                if folder.name.startswith((".new-", ".old-")):
                    shutil.rmtree(folder, ignore_errors=True)  # an interrupted create or drop
                continue
            if (folder / SPEC_FILE).is_file():
                spec = CollectionSpec.model_validate_json((folder / SPEC_FILE).read_text())
                self._collections[spec.name] = self._load(folder, spec)

    def _load(self, folder: Path, spec: CollectionSpec) -> _Collection:
        try:
            shard = _edge().EdgeShard.load(str(folder / SHARD_DIR))
        except Exception as exc:  # the engine raises a bare Exception
            if "WouldBlock" in str(exc):
                raise _busy(folder) from exc
            raise
        collection = _Collection(folder, spec, shard)
        self._recover(collection)
        return collection

    def _recover(self, col: _Collection) -> None:
        """Finish what a crash interrupted: removals of replaced versions, and versions written after the last
        commit (each complete, as the WAL replays updates whole) whose older versions were never removed."""
        edge = _edge()
        record = col.read_commit()
        committed = int(record.get("seq", 0))
        # A record without the count (written before it was kept) may hold any number of unindexed points.
        col.unindexed = int(record.get("unindexed", col.shard.info().points_count))
        removing = list(record.get("removing") or [])
        if removing:
            col.shard.update(edge.UpdateOperation.delete_points(removing))
        late: dict[str, int] = {}
        newer = edge.Filter(must=[edge.FieldCondition(key="seq", range=edge.RangeFloat(gt=committed))])
        for points in self._scroll(col, newer, ["document_id", "seq"]):
            for p in points:
                doc, seq = str(p.payload["document_id"]), int(p.payload["seq"])
                late[doc] = max(late.get(doc, 0), seq)
        for doc, seq in late.items():
            older = edge.Filter(
                must=[
                    edge.FieldCondition(key="document_id", match=edge.MatchValue(value=doc)),
                    edge.FieldCondition(key="seq", range=edge.RangeFloat(lt=seq)),
                ]
            )
            col.shard.update(edge.UpdateOperation.delete_points_by_filter(older))
        col.view = _View(committed=max([committed, *late.values()]))
        if removing or late:
            logger.warning(
                "finished an interrupted write",
                extra={"collection": col.spec.name, "removed": len(removing), "documents": len(late)},
            )
            col.shard.flush()
            col.write_commit(col.view.committed)

    def close(self) -> None:
        with self._guard:
            for col in self._collections.values():
                with col.write_lock:
                    col.shard.close()
            self._collections.clear()
        if self._lock_fd >= 0:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _get(self, name: str) -> _Collection:
        col = self._collections.get(name)
        if col is None:
            raise CollectionNotFoundError(f"collection {name!r} does not exist", param="collection")
        return col

    # -- specs -------------------------------------------------------------------------------------------
    def list_specs(self) -> list[CollectionSpec]:
        with self._guard:
            return sorted((c.spec for c in self._collections.values()), key=lambda s: s.name)

    def spec(self, name: str) -> CollectionSpec:
        return self._get(name).spec

    def create(self, spec: CollectionSpec) -> None:
        check_name(spec.name)
        edge = _edge()
        with self._guard:
            if spec.name in self._collections:
                raise CollectionExistsError(f"collection {spec.name!r} already exists", param="name")
            staging = self.root / f".new-{spec.name}-{uuid.uuid4().hex[:8]}"
            staging.mkdir()
            try:
                config = edge.EdgeConfig(
                    vectors={
                        DENSE: edge.EdgeVectorParams(
                            size=spec.dimension,
                            distance=edge.Distance.Cosine,
                            multivector_config=edge.MultiVectorConfig(edge.MultiVectorComparator.MaxSim),
                        )
                    },
                    sparse_vectors={SPARSE: edge.EdgeSparseVectorParams(modifier=edge.Modifier.Idf)},
                    optimizers=edge.EdgeOptimizersConfig(
                        deleted_threshold=VACUUM_FRACTION,
                        vacuum_min_vector_number=100,
                        max_segment_size=MAX_SEGMENT_KB,
                        default_segment_number=MERGE_ABOVE_SEGMENTS,
                        indexing_threshold=_indexing_kb(
                            self.settings.embedded.index_threshold, spec.dimension
                        ),
                    ),
                )
                shard = edge.EdgeShard.create(str(staging / SHARD_DIR), config)
                try:
                    for key, kind in {**SYSTEM_INDEXES, **_meta_keys(spec)}.items():
                        shard.update(edge.UpdateOperation.create_field_index(key, _schema(kind)))
                    shard.flush()
                finally:
                    shard.close()
                write_atomic(staging / SPEC_FILE, spec.model_dump_json(indent=2))
                folder = self.root / spec.name
                staging.rename(folder)  # the collection exists from here on, whole
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            self._collections[spec.name] = self._load(folder, spec)

    def save_spec(self, spec: CollectionSpec) -> None:
        with self._guard:
            col = self._get(spec.name)
            write_atomic(col.folder / SPEC_FILE, spec.model_dump_json(indent=2))
            col.spec = spec

    def drop(self, name: str) -> None:
        with self._guard:
            col = self._get(name)
            with col.write_lock:
                col.shard.close()
                del self._collections[name]
            trash = self.root / f".old-{name}-{uuid.uuid4().hex[:8]}"
            col.folder.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)

    # -- reads -------------------------------------------------------------------------------------------
    def _read(self, col: _Collection, flt: Any, run: Callable[[Any], T]) -> T:
        """``run(filter)`` with ``flt`` restricted to the collection's view; again if the view changed meanwhile,
        and after :data:`READ_ATTEMPTS` such overlaps under the write lock (so that a long write cannot starve
        a read)."""
        edge = _edge()
        for _ in range(READ_ATTEMPTS):
            view = col.view
            result = run(view.restrict(edge, flt))
            if col.view is view:
                return result
        with col.write_lock:
            return run(col.view.restrict(edge, flt))

    def _scroll(self, col: _Collection, flt: Any, fields: list[str] | None) -> Iterator[list[Any]]:
        edge = _edge()
        selector = edge.PayloadSelector.Include(fields) if fields is not None else True
        offset = None
        while True:
            points, offset = col.shard.scroll(
                edge.ScrollRequest(offset=offset, limit=1024, filter=flt, with_payload=selector)
            )
            if points:
                yield points
            if offset is None:
                return

    def sections_of(self, name: str, document_ids: list[str]) -> dict[str, list[StoredSection]]:
        edge = _edge()
        col = self._get(name)
        out: dict[str, list[StoredSection]] = {d: [] for d in document_ids}
        for start in range(0, len(document_ids), 1024):
            ids = document_ids[start : start + 1024]
            flt = edge.Filter(must=[edge.FieldCondition(key="document_id", match=edge.MatchAny(any=ids))])
            for points in self._scroll(col, flt, ["document_id", "chunks"]):
                for p in points:
                    section = stored_section(p.id, p.payload)
                    out[section.document_id].append(section)
        return out

    def vectors(self, name: str, ids: list[str]) -> dict[str, np.ndarray]:
        col = self._get(name)
        if not ids:
            return {}
        records = col.shard.retrieve(list(ids), False, [DENSE])
        return {str(r.id): np.asarray(r.vector[DENSE], dtype=np.float32) for r in records if r.vector}

    def query(self, name: str, query: StoreQuery) -> QueryResult:
        edge = _edge()
        col = self._get(name)
        user = query.filter.build(edge, boolean=np.bool_) if query.filter is not None else None
        return self._read(col, user, lambda flt: self._query(col, query, flt))

    def _query(self, col: _Collection, query: StoreQuery, flt: Any) -> QueryResult:
        edge = _edge()
        dense = edge.Query.Nearest([list(query.dense)], using=DENSE) if query.dense is not None else None
        sparse = (
            edge.Query.Nearest(
                edge.SparseVector(list(query.sparse.indices), list(query.sparse.values)), using=SPARSE
            )
            if query.sparse
            else None
        )
        bm25_only = edge.QueryRequest(limit=query.candidates, query=sparse, filter=flt, with_payload=False)
        payload = edge.PayloadSelector.Include(["document_id"]) if query.ids_only else True
        vectors = None if query.ids_only else [DENSE]
        if query.hybrid:
            fusion = (
                edge.Fusion.Dbsf()
                if query.fusion == "dbsf"
                else edge.Fusion.Rrf(k=query.rrf_k, weights=list(query.weights) if query.weights else None)
            )
            main = edge.QueryRequest(
                limit=query.limit,
                prefetches=[
                    edge.Prefetch(limit=query.candidates, query=dense, filter=flt),
                    edge.Prefetch(limit=query.candidates, query=sparse, filter=flt),
                ],
                query=fusion,
                filter=flt,
                with_payload=payload,
                with_vector=vectors,
            )
            if query.ids_only:
                return QueryResult(_hits(col.shard.query(main)))
            fused, bm25 = col.shard.query_batch(edge.QueryBatchRequest([main, bm25_only]))
            return QueryResult(_hits(fused), {str(p.id): float(p.score) for p in bm25})
        if dense is not None:
            request = edge.QueryRequest(
                limit=query.limit, query=dense, filter=flt, with_payload=payload, with_vector=vectors
            )
            return QueryResult(_hits(col.shard.query(request)))
        if sparse is None:
            return QueryResult([])
        request = edge.QueryRequest(limit=query.limit, query=sparse, filter=flt, with_payload=payload)
        hits = _hits(col.shard.query(request))
        return QueryResult(hits, {h.id: h.score for h in hits})

    def scroll_sections(self, name: str) -> Iterator[list[tuple[str, str, str]]]:
        col = self._get(name)
        for points in self._scroll(col, None, ["document_id", "text"]):
            yield [(str(p.id), str(p.payload["document_id"]), str(p.payload["text"])) for p in points]

    def counts(self, name: str) -> tuple[int, int]:
        edge = _edge()
        col = self._get(name)
        lead = edge.Filter(
            must=[edge.FieldCondition(key="lead", match=edge.MatchValue(value=np.bool_(True)))]
        )

        def run(flt: Any) -> tuple[int, int]:
            leads = lead if flt is None else edge.Filter(must=[lead, flt])
            documents = col.shard.count(edge.CountRequest(exact=True, filter=leads))
            facet = col.shard.facet(edge.FacetRequest(key="n_chunks", limit=100_000, exact=True, filter=flt))
            return int(documents), facet_sum([(h.value, h.count) for h in facet.hits])

        return self._read(col, None, run)

    def info(self, name: str) -> dict[str, int]:
        """Segments, points and indexed vectors of a collection's shard (for benchmarks and logs)."""
        info = self._get(name).shard.info()
        return {
            "segments": int(info.segments_count),
            "points": int(info.points_count),
            "indexed_vectors": int(info.indexed_vectors_count),
        }

    # -- writes ------------------------------------------------------------------------------------------
    def write(self, name: str, add: list[PointData], remove: list[str]) -> None:
        edge = _edge()
        col = self._get(name)
        with col.write_lock:
            before = col.view.committed
            seq = before + 1 if add else before
            if add:
                col.view = _View(committed=before, writing=True)
                try:
                    for batch in document_batches(add):
                        points = [_point(edge, p, seq) for p in batch]
                        col.shard.update(edge.UpdateOperation.upsert_points(points))
                except BaseException:
                    self._undo(col, seq)
                    col.view = _View(committed=before)
                    raise
            if remove:
                col.write_commit(seq, removing=remove)
                col.view = _View(committed=seq, hidden=tuple(remove))
                col.shard.update(edge.UpdateOperation.delete_points(list(remove)))
                col.removed += len(remove)
            col.view = _View(committed=seq)
            col.unindexed += len(add)
            if add or remove:
                col.write_commit(seq)
            self._maybe_index(col)

    def _undo(self, col: _Collection, seq: int) -> None:
        """Remove the points a failed write had put in. Section ids are content-addressed and a write adds only
        sections the collection lacks, so this restores the collection as it was."""
        edge = _edge()
        flt = edge.Filter(must=[edge.FieldCondition(key="seq", range=edge.RangeFloat(gte=seq))])
        try:
            col.shard.update(edge.UpdateOperation.delete_points_by_filter(flt))
        except Exception:  # the engine raises a bare Exception; the write's own error is the one to report
            logger.exception(
                "could not remove the points of a failed write", extra={"collection": col.spec.name}
            )

    def set_sparse(self, name: str, vectors: dict[str, SparseVector]) -> None:
        edge = _edge()
        col = self._get(name)
        items = list(vectors.items())
        with col.write_lock:
            for start in range(0, len(items), 1024):
                col.shard.update(
                    edge.UpdateOperation.update_vectors(
                        [
                            edge.PointVectors(
                                pid, {SPARSE: edge.SparseVector(list(v.indices), list(v.values))}
                            )
                            for pid, v in items[start : start + 1024]
                        ]
                    )
                )
            col.shard.flush()

    def _maybe_index(self, col: _Collection) -> None:
        """Run Edge's optimizer once enough points are unindexed (HNSW, merges) or removed (vacuum, so that IDF
        counts live sections only). It holds the GIL while it runs (measured: docs/retrieval.md), so it runs
        here, at the end of a write, never on the search path."""
        points = int(col.shard.info().points_count)
        threshold = self.settings.embedded.index_threshold
        unindexed = threshold > 0 and col.unindexed >= threshold
        vacuum = col.removed > 0 and col.removed >= VACUUM_FRACTION * max(points, 1)
        if unindexed or vacuum:
            self._optimize(col)

    def _optimize(self, col: _Collection) -> None:
        started = time.perf_counter()
        col.shard.optimize()
        col.shard.flush()  # Edge deletes the segments an optimization replaced only on a flush (measured)
        logger.info(
            "optimized",
            extra={
                "collection": col.spec.name,
                "unindexed": col.unindexed,
                "removed": col.removed,
                "seconds": round(time.perf_counter() - started, 2),
            },
        )
        col.removed = col.unindexed = 0
        col.write_commit(col.view.committed)

    def optimize(self, name: str) -> None:
        """Run Edge's optimizer now (HNSW of every large segment, merges), whatever the threshold."""
        col = self._get(name)
        with col.write_lock:
            self._optimize(col)


def _indexing_kb(points: int, dimension: int) -> int:
    """Edge's ``indexing_threshold`` (KB of dense vectors a segment needs for the optimizer to build its HNSW
    graph) matching ``embedded.index_threshold`` points of one vector: a segment of fewer stays a plain exact
    scan (its vectors cost less to scan than a graph to build), also when a vacuum runs the optimizer; 0 never
    indexes."""
    return max(1, points * dimension * 4 // 1024) if points else 0


def _meta_keys(spec: CollectionSpec) -> dict[str, PayloadIndexType]:
    return {f"meta.{key}": kind for key, kind in spec.payload_indexes.items()}


def _point(edge: Any, data: PointData, seq: int) -> Any:
    sparse = edge.SparseVector(list(data.sparse.indices), list(data.sparse.values))
    vectors: dict[str, Any] = {DENSE: data.vectors.tolist(), SPARSE: sparse}
    return edge.Point(data.section.id, vectors, data.section.payload(data.version, seq))


def _hits(points: list[Any]) -> list[StoredHit]:
    return [stored_hit(p.id, p.score, p.payload, p.vector) for p in points]
