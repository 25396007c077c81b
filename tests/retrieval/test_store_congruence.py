"""Congruence of the two backends: the same ingest, updates, deletes and queries on the embedded Qdrant Edge store
and on the Qdrant-server backend give the same top 10 (within ties).

The server backend runs against qdrant-client's local mode (``QdrantClient(":memory:")``), which implements the
Qdrant server's API in Python: a **stand-in** for a Qdrant server, which cannot be installed on these machines.
docs/retrieval.md lists what this does not verify (the server's own HNSW, sharding and replication, IDF after
deletes before segments are vacuumed, network errors).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from ragswap.model_store import ModelSettings
from retrieval import BeirData, Document, RetrievalService, RetrievalSettings, SearchQuery, parse_filter
from tests.retrieval.conftest import same_within_ties, tagged

QUERIES = 25
FILTERS: list[dict[str, Any] | None] = [
    None,
    {"island": {"in": ["Ostrand", "Vesk", "Helvane"]}},
    {"founded": {"gte": 1760, "lte": 1860}},
    {"$or": [{"certified": True}, {"kind": "chronicle"}], "$not": {"island": "Drask"}},
    {"rating": {"gt": 2.5}, "parity": {"ne": "odd"}},
]
EXACT = [
    {"mode": "dense"},
    {"mode": "bm25"},
    {"mode": "hybrid", "fusion": "dbsf"},
    {"mode": "hybrid", "fusion": "dbsf", "group_by": "section"},
]
"""Score-based searches: both engines give the same scores, so the same order up to exact ties."""
RANK_FUSIONS = [
    {"mode": "hybrid", "fusion": "rrf", "rrf_k": 10},
    {"mode": "hybrid", "fusion": "weighted", "weight": 0.7},
]
"""Rank-based fusion: sections with exactly equal BM25 scores (common in this templated corpus) come in engine
order, which differs between engines, and RRF turns that into different fused scores (one rank step each)."""


@pytest.fixture(scope="module")
def backends(
    tmp_path_factory: pytest.TempPathFactory, corpus: BeirData, chunk_vectors: dict[str, np.ndarray]
) -> Iterator[dict[str, RetrievalService]]:
    """Both backends with the same documents written the same way (vectors encoded once, reused)."""
    root = tmp_path_factory.mktemp("congruence")
    edge = RetrievalService(RetrievalSettings(path=root / "edge"), ModelSettings(), root)
    server = RetrievalService(RetrievalSettings(url=":memory:"), ModelSettings(), root)
    services = {"edge": edge, "server-stand-in": server}
    docs = [d for d in tagged(corpus) if d.id.startswith("c") or int(d.id[1:]) < 150]
    edge.create_collection("kb", payload_indexes={"island": "keyword"})
    server.create_collection("kb", payload_indexes={"island": "keyword"})
    vectors = chunk_vectors
    replaced = [Document(d.id, d.text + " It was renamed after the war.", d.metadata) for d in docs[:10]]
    for svc in services.values():
        svc.ingest("kb", docs, vectors=vectors)
        svc.ingest("kb", replaced)  # update: new versions replace the old ones
        svc.delete_documents("kb", [d.id for d in docs[10:20]])  # delete
    try:
        yield services
    finally:
        for svc in services.values():
            svc.close()


def _ranking(svc: RetrievalService, text: str, vector: np.ndarray, **options: Any) -> list[tuple[str, float]]:
    hits = svc.search(SearchQuery(collection="kb", query=text, top_k=10, vector=vector, **options))
    return [(h.section_id, h.score) for h in hits]


def test_both_backends_hold_the_same_collection(backends: dict[str, RetrievalService]) -> None:
    infos = {name: svc.describe("kb") for name, svc in backends.items()}
    counts = {name: (i.documents, i.chunks) for name, i in infos.items()}
    assert len(set(counts.values())) == 1, counts
    assert infos["edge"].spec.bm25.avg_len == infos["server-stand-in"].spec.bm25.avg_len


@pytest.mark.parametrize("flt", FILTERS, ids=lambda f: "none" if f is None else "+".join(f))
def test_same_top_10_on_both_backends(
    backends: dict[str, RetrievalService], corpus: BeirData, flt: dict[str, Any] | None
) -> None:
    edge, server = backends["edge"], backends["server-stand-in"]
    spec = edge.store.spec("kb")
    qids = sorted(corpus.qrels)[:QUERIES]
    vectors = edge.embedder(spec).encode([corpus.queries[q] for q in qids])
    compared = 0
    overlap: list[float] = []
    top1: list[bool] = []
    for qid, vector in zip(qids, vectors, strict=True):
        for options in EXACT:
            a = _ranking(edge, corpus.queries[qid], vector, filter=parse_filter(flt), **options)
            b = _ranking(server, corpus.queries[qid], vector, filter=parse_filter(flt), **options)
            assert same_within_ties(a, b, 1e-4), (qid, options, a, b)
            compared += bool(a)
        for options in RANK_FUSIONS:
            a = _ranking(edge, corpus.queries[qid], vector, filter=parse_filter(flt), **options)
            b = _ranking(server, corpus.queries[qid], vector, filter=parse_filter(flt), **options)
            if a and b:
                overlap.append(len({x for x, _ in a} & {y for y, _ in b}) / max(len(a), len(b)))
                top1.append(a[0][0] == b[0][0])
    assert compared >= QUERIES * len(EXACT) // 2  # the filters leave most searches with results
    assert np.mean(overlap) >= 0.9 and np.mean(top1) >= 0.9, (np.mean(overlap), np.mean(top1))


def test_collections_are_shared_through_the_server_within_a_second() -> None:
    """Two gateways on one server (two stores on one qdrant-client connection, the stand-in's only way to share
    its data): a collection created, tuned or deleted through one is seen by the other within ``SPEC_TTL_S``."""
    import time

    from qdrant_client import QdrantClient

    from retrieval import CollectionNotFoundError, CollectionSpec, SearchOverrides
    from retrieval.store.server import SPEC_TTL_S, ServerStore

    client = QdrantClient(location=":memory:")
    settings = RetrievalSettings(url=":memory:")
    one, other = ServerStore(client, settings), ServerStore(client, settings)
    with pytest.raises(CollectionNotFoundError):
        other.spec("shared")  # cached as absent now
    one.create(CollectionSpec(name="shared", embedding_model="all-minilm-l6-v2", dimension=384))
    assert SPEC_TTL_S <= 1.0
    time.sleep(SPEC_TTL_S)
    assert other.spec("shared").name == "shared"
    assert [s.name for s in other.list_specs()] == ["shared"]
    one.save_spec(one.spec("shared").model_copy(update={"search": SearchOverrides(fusion="rrf", rrf_k=5)}))
    time.sleep(SPEC_TTL_S)
    assert other.spec("shared").search.rrf_k == 5
    one.drop("shared")
    time.sleep(SPEC_TTL_S)
    with pytest.raises(CollectionNotFoundError):
        other.spec("shared")
