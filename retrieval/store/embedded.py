"""Embedded backend: Qdrant local mode (``QdrantClient(path=...)``) holds the points durably; searches run on
in-process indexes (a numpy matrix of the unit vectors and a bm25s index) rebuilt from it and cached on disk.

Why: qdrant-client's local mode is pure Python — a sparse query costs ~200 ms and dense search grows linearly
past 20k points — while a matrix product and bm25s answer in a few milliseconds at 100k chunks.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.bm25 import Bm25Index
from retrieval.filters import MetadataFilter
from retrieval.settings import RetrievalSettings
from retrieval.store.base import QdrantBase, qdrant_name
from retrieval.types import Chunk

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """An immutable view of one collection; writers build a new one and swap it in, readers never lock."""

    ids: list[str]
    payloads: list[dict[str, Any]]
    dense: np.ndarray
    bm25: Bm25Index
    row: dict[str, int] = field(default_factory=dict)
    by_doc: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def make(
        cls, ids: list[str], payloads: list[dict[str, Any]], dense: np.ndarray, bm25: Bm25Index
    ) -> Snapshot:
        by_doc: dict[str, set[str]] = {}
        for cid, payload in zip(ids, payloads, strict=True):
            by_doc.setdefault(str(payload["document_id"]), set()).add(cid)
        return cls(ids, payloads, dense, bm25, {cid: i for i, cid in enumerate(ids)}, by_doc)

    def mask(self, flt: MetadataFilter | None) -> np.ndarray | None:
        if flt is None:
            return None
        return np.fromiter(
            (flt.matches(str(p["document_id"]), p.get("meta") or {}) for p in self.payloads),
            dtype=bool,
            count=len(self.payloads),
        )


def _top(scores: np.ndarray, limit: int, ids: list[str], positive: bool) -> dict[str, float]:
    if scores.size == 0:
        return {}
    limit = min(limit, scores.size)
    idx = np.argpartition(-scores, limit - 1)[:limit]
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    return {ids[i]: float(scores[i]) for i in idx if not positive or scores[i] > 0}


class EmbeddedStore(QdrantBase):
    """Everything in one directory, no server needed (the default)."""

    def __init__(self, settings: RetrievalSettings, root: Path) -> None:
        from qdrant_client import QdrantClient

        self.root = root.expanduser()
        self.root.mkdir(parents=True, exist_ok=True)
        super().__init__(QdrantClient(path=str(self.root / "qdrant")), settings)
        self._snapshots: dict[str, Snapshot] = {}
        for spec in self.list_specs():
            self._tune(qdrant_name(spec.name))

    def _tune(self, qname: str) -> None:
        """Local mode commits every point with an fsync (~60 points/s on this disk); WAL with synchronous=NORMAL
        is still crash-safe for the process and ~20x faster."""
        try:
            storage = self.client._client.collections[qname].storage  # type: ignore[attr-defined]
            if storage is not None:
                storage.storage.execute("PRAGMA journal_mode=WAL")
                storage.storage.execute("PRAGMA synchronous=NORMAL")
        except (AttributeError, KeyError) as exc:  # another qdrant-client layout: keep its defaults
            logger.debug("could not tune local Qdrant storage: %s", exc)

    def _after_create(self, qname: str) -> None:
        self._tune(qname)

    def _cache_dir(self, name: str) -> Path:
        return self.root / "index" / name

    def create(self, spec: Any) -> None:
        super().create(spec)
        # A cache left by an earlier collection of the same name must not be mistaken for this one's.
        shutil.rmtree(self._cache_dir(spec.name), ignore_errors=True)
        self._snapshots.pop(spec.name, None)

    def drop(self, name: str) -> None:
        super().drop(name)
        self._snapshots.pop(name, None)
        shutil.rmtree(self._cache_dir(name), ignore_errors=True)

    # -- snapshots ---------------------------------------------------------------------------------------
    def snapshot(self, name: str) -> Snapshot:
        snap = self._snapshots.get(name)
        if snap is not None:
            return snap
        with self.lock:  # the store's one lock: loading also reads Qdrant (a second lock could deadlock)
            if name not in self._snapshots:
                self._snapshots[name] = self._load(name)
            return self._snapshots[name]

    def _load(self, name: str) -> Snapshot:
        spec = self.spec(name)
        stored = {str(p.id): dict(p.payload or {}) for p in self._scroll(name)}
        folder = self._cache_dir(name)
        ids: list[str] = []
        dense: np.ndarray | None = None
        try:
            cached_ids = json.loads((folder / "ids.json").read_text())
            if set(cached_ids) == set(stored) and len(cached_ids) == len(stored):
                matrix = np.load(folder / "dense.npy")
                if matrix.shape == (len(cached_ids), spec.dimension):
                    ids, dense = cached_ids, matrix
        except (OSError, ValueError):
            pass
        bm25 = None
        if dense is None:
            logger.info("rebuilding the in-process index of %s from Qdrant", name)
            vectors = {str(p.id): p.vector[DENSE_KEY] for p in self._scroll(name, vectors=True)}
            ids = list(stored)
            dense = np.asarray([vectors[i] for i in ids], dtype=np.float32).reshape(len(ids), spec.dimension)
            dense = _normalise(dense)
        else:
            bm25 = Bm25Index.load(folder / "bm25", spec.bm25, len(ids))
        payloads = [stored[i] for i in ids]
        if bm25 is None:
            bm25 = Bm25Index.build([p["text"] for p in payloads], spec.bm25)
            self._save(name, ids, dense, bm25)
        return Snapshot.make(ids, payloads, dense, bm25)

    def _save(self, name: str, ids: list[str], dense: np.ndarray, bm25: Bm25Index) -> None:
        """Write the caches to a fresh folder and rename it into place (a crash leaves the old one or none)."""
        folder = self._cache_dir(name)
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        np.save(tmp / "dense.npy", dense)
        bm25.save(tmp / "bm25")
        (tmp / "ids.json").write_text(json.dumps(ids))
        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)

    # -- ChunkStore --------------------------------------------------------------------------------------
    def chunk_ids(self, name: str, document_ids: list[str]) -> dict[str, set[str]]:
        snap = self.snapshot(name)
        return {d: set(snap.by_doc.get(d, set())) for d in document_ids}

    def write(self, name: str, add: list[Chunk], vectors: np.ndarray, remove: list[str]) -> None:
        spec = self.spec(name)
        with self.lock:
            snap = self.snapshot(name)
            fresh = [i for i, c in enumerate(add) if c.id not in snap.row]
            add = [add[i] for i in fresh]
            vectors = vectors.reshape(-1, spec.dimension)[fresh]
            self._upsert_atomic(name, add, vectors, remove)
            gone = set(remove)
            keep = [i for i, cid in enumerate(snap.ids) if cid not in gone]
            ids = [snap.ids[i] for i in keep] + [c.id for c in add]
            payloads = [snap.payloads[i] for i in keep] + [c.payload() for c in add]
            dense = np.concatenate([snap.dense[keep], _normalise(vectors.reshape(len(add), spec.dimension))])
            bm25 = Bm25Index.build([p["text"] for p in payloads], spec.bm25)
            self._snapshots[name] = Snapshot.make(ids, payloads, dense.astype(np.float32), bm25)
            try:
                self._save(name, ids, dense, bm25)
            except OSError as exc:  # the points are durable; the cache is rebuilt on the next open
                logger.warning("could not save the index cache of %s: %s", name, exc)

    def dense(
        self, name: str, vector: np.ndarray, limit: int, flt: MetadataFilter | None
    ) -> dict[str, float]:
        snap = self.snapshot(name)
        if not snap.ids:
            return {}
        scores = snap.dense @ vector.astype(np.float32)
        mask = snap.mask(flt)
        if mask is not None:
            scores = np.where(mask, scores, -np.inf)
        top = _top(scores, limit, snap.ids, positive=False)
        return {k: v for k, v in top.items() if np.isfinite(v)}

    def bm25(self, name: str, query: str, limit: int, flt: MetadataFilter | None) -> dict[str, float]:
        snap = self.snapshot(name)
        scores = snap.bm25.scores(query)
        if scores.size == 0:
            return {}
        mask = snap.mask(flt)
        if mask is not None:
            scores = np.where(mask, scores, 0.0)
        return _top(scores, limit, snap.ids, positive=True)

    def dense_scores(self, name: str, vector: np.ndarray, ids: list[str]) -> dict[str, float]:
        snap = self.snapshot(name)
        rows = [snap.row[i] for i in ids if i in snap.row]
        scores = snap.dense[rows] @ vector.astype(np.float32)
        return {snap.ids[r]: float(s) for r, s in zip(rows, scores, strict=True)}

    def get(self, name: str, ids: list[str]) -> dict[str, Chunk]:
        snap = self.snapshot(name)
        return {i: Chunk.from_payload(i, snap.payloads[snap.row[i]]) for i in ids if i in snap.row}

    def counts(self, name: str) -> tuple[int, int]:
        snap = self.snapshot(name)
        return len(snap.by_doc), len(snap.ids)


DENSE_KEY = "dense"


def _normalise(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32)
