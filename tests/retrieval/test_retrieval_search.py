"""Search quality and mechanics on the synthetic archipelago corpus with the real MiniLM embedder and Qdrant
Edge (BM25, dense and fusion all run in the engine)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from eval import ndcg_at_k
from retrieval import (
    BeirData,
    InvalidSearchError,
    RetrievalService,
    SearchOverrides,
    SearchQuery,
    SearchSettings,
    parse_filter,
)
from retrieval.fusion import blend
from retrieval.models import recommended_rerank_weight
from tests.retrieval.conftest import with_reranker

MODES = [
    ("dense", "rrf"),
    ("bm25", "rrf"),
    ("hybrid", "rrf"),
    ("hybrid", "weighted"),
    ("hybrid", "dbsf"),
]
# Share of queries with a relevant document in the top 10, measured on all 439 queries: bm25 0.59, dense 0.76,
# hybrid 0.87 (the queries paraphrase their documents, so neither retriever alone finds everything).
FOUND = {"bm25": 0.5, "dense": 0.65, "hybrid": 0.8}


def _sample(corpus: BeirData, n: int = 120) -> list[str]:
    return sorted(corpus.qrels)[:n]


@pytest.fixture(scope="module")
def query_vectors(
    service: RetrievalService, corpus_collection: str, corpus: BeirData
) -> dict[str, np.ndarray]:
    spec = service.store.spec(corpus_collection)
    ids = _sample(corpus)
    return dict(zip(ids, service.embedder(spec).encode([corpus.queries[q] for q in ids]), strict=True))


def _top_docs(
    service: RetrievalService, collection: str, text: str, k: int = 10, **options: Any
) -> list[str]:
    hits = service.search(SearchQuery(collection=collection, query=text, top_k=k, **options))
    return [h.chunk.document_id for h in hits]


@pytest.mark.parametrize(("mode", "fusion"), MODES)
def test_relevant_documents_rank_in_top_10(
    service: RetrievalService,
    corpus_collection: str,
    corpus: BeirData,
    query_vectors: dict[str, np.ndarray],
    mode: str,
    fusion: str,
) -> None:
    found = 0
    for qid in _sample(corpus):
        top = _top_docs(
            service,
            corpus_collection,
            corpus.queries[qid],
            mode=mode,
            fusion=fusion,
            vector=query_vectors[qid],
        )
        assert len(top) == len(set(top))  # one hit per document by default
        found += bool(set(corpus.qrels[qid]) & set(top))
    assert found >= FOUND[mode] * len(_sample(corpus)), f"{mode}/{fusion}: {found}"


def test_hybrid_ranks_better_than_either_retriever(
    service: RetrievalService, corpus_collection: str, corpus: BeirData, query_vectors: dict[str, np.ndarray]
) -> None:
    ndcg = {}
    for mode in ("bm25", "dense", "hybrid"):
        ndcg[mode] = float(
            np.mean(
                [
                    ndcg_at_k(
                        _top_docs(
                            service, corpus_collection, corpus.queries[q], mode=mode, vector=query_vectors[q]
                        ),
                        corpus.qrels[q],
                        10,
                    )
                    for q in _sample(corpus)
                ]
            )
        )
    assert ndcg["hybrid"] > max(ndcg["bm25"], ndcg["dense"]) + 0.05, ndcg


def test_long_documents_rank_whole_and_cite_their_best_chunk(
    service: RetrievalService, corpus_collection: str, corpus: BeirData
) -> None:
    """A chronicle (thousands of tokens, several sections) is found by a question about one of its sections; the
    hit's text is the chunk that answers it, at its exact offsets; ``group_by="section"`` lists its sections."""
    chronicle = next(q for q in sorted(corpus.qrels) if next(iter(corpus.qrels[q])).startswith("c"))
    doc_id = next(iter(corpus.qrels[chronicle]))
    text = corpus.corpus[doc_id]
    festival = corpus.queries[chronicle].split("the ")[1].split(" celebration")[0]
    hits = service.search(SearchQuery(collection=corpus_collection, query=corpus.queries[chronicle], top_k=5))
    assert hits[0].chunk.document_id == doc_id
    assert festival in hits[0].chunk.text and hits[0].chunk.start > 0
    assert text[hits[0].chunk.start : hits[0].chunk.end] == hits[0].chunk.text
    sections = service.search(
        SearchQuery(
            collection=corpus_collection,
            query=f"chronicle harbour weather roads of {doc_id}",
            top_k=50,
            group_by="section",
        )
    )
    per_doc: dict[str, set[str]] = {}
    for h in sections:
        per_doc.setdefault(h.chunk.document_id, set()).add(h.section_id)
    assert max(len(v) for v in per_doc.values()) >= 2  # a long document contributes several sections


def test_int8_collection_ranks_like_float32(
    service: RetrievalService, corpus_collection: str, corpus: BeirData
) -> None:
    """An ``int8`` collection embeds documents and queries with the quantized embedder and ranks about as well."""
    import torch

    spec = service.create_collection("corpus_int8", embedding_precision="int8")
    docs = corpus.documents()[:200]
    service.ingest("corpus_int8", docs)
    assert service.describe("corpus_int8").spec.embedding_precision == "int8"
    int8, fp32 = service.embedder(spec), service.embedder(service.describe(corpus_collection).spec)
    assert int8 is not fp32 and int8.precision == "int8"
    linears = [m for m in int8.model.modules() if "quantized" in type(m).__module__]
    assert linears and not any(type(m) is torch.nn.Linear for m in int8.model.modules())
    qids = [q for q in sorted(corpus.qrels) if set(corpus.qrels[q]) <= {d.id for d in docs}][:40]
    texts = [corpus.queries[q] for q in qids]
    cosine = (int8.encode(texts) * fp32.encode(texts)).sum(axis=1)
    assert float(cosine.min()) > 0.9 and float(cosine.max()) < 0.9999  # close, but really a different model
    service.create_collection("corpus_fp32")
    service.ingest("corpus_fp32", docs)
    found = {"int8": 0, "float32": 0}
    overlap = 0
    for qid in qids:
        top8 = _top_docs(service, "corpus_int8", corpus.queries[qid], mode="dense")
        top32 = _top_docs(service, "corpus_fp32", corpus.queries[qid], mode="dense")
        found["int8"] += bool(set(corpus.qrels[qid]) & set(top8))
        found["float32"] += bool(set(corpus.qrels[qid]) & set(top32))
        overlap += len(set(top8) & set(top32))
    assert found["int8"] >= found["float32"] - 2, found
    assert overlap >= 0.7 * 10 * len(qids)
    service.delete_collection("corpus_int8")
    service.delete_collection("corpus_fp32")


def test_hits_carry_every_stage_score(
    service: RetrievalService, corpus_collection: str, corpus: BeirData
) -> None:
    text = corpus.queries[sorted(corpus.qrels)[0]]
    hits = service.search(
        SearchQuery.from_settings(service.settings.search, corpus_collection, text, top_k=5)
    )
    assert len(hits) == 5
    for hit in hits:
        assert {"dense", "bm25", "fused"} <= set(hit.scores)
        assert hit.score == hit.scores["fused"]
        assert -1.0 <= hit.scores["dense"] <= 1.0
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_filters_restrict_results(
    service: RetrievalService, corpus_collection: str, corpus: BeirData
) -> None:
    text = corpus.queries[sorted(corpus.qrels)[0]]
    for mode in ("dense", "bm25", "hybrid"):
        q = SearchQuery.from_settings(
            service.settings.search,
            corpus_collection,
            text,
            mode=mode,
            top_k=20,  # type: ignore[arg-type]
            filter=parse_filter({"parity": "odd", "num": {"gte": 200}}),
        )
        hits = service.search(q)
        assert hits, mode
        assert all(h.chunk.metadata["parity"] == "odd" and h.chunk.metadata["num"] >= 200 for h in hits)
    one = corpus.documents()[5].id
    q = SearchQuery.from_settings(
        service.settings.search, corpus_collection, text, filter=parse_filter({"document_id": {"in": [one]}})
    )
    assert {h.chunk.document_id for h in service.search(q)} == {one}


def test_rerank_reorders_the_fused_candidates(
    service: RetrievalService,
    corpus_collection: str,
    corpus: BeirData,
    tmp_path: Path,
    untrained_cross_encoder: Path,
) -> None:
    """Two-stage mechanics with a CrossEncoder built from MiniLM whose head is untrained (no trained reranker
    weights exist offline, and training one takes minutes: ``bench/retrieval.py`` trains and scores it)."""

    text = corpus.queries[sorted(corpus.qrels)[0]]
    plain = SearchQuery.from_settings(
        service.settings.search, corpus_collection, text, top_k=10, rerank=False
    )
    with pytest.raises(InvalidSearchError):
        service.search(
            SearchQuery.from_settings(service.settings.search, corpus_collection, text, rerank=True)
        )
    folder = untrained_cross_encoder
    reranking = with_reranker(service, folder)
    q = SearchQuery.from_settings(
        service.settings.search, corpus_collection, text, top_k=5, rerank=True, rerank_depth=10
    )
    hits = reranking.search(q)
    candidates = {h.chunk.id for h in service.search(plain)}
    assert len(hits) == 5
    assert {h.chunk.id for h in hits} <= candidates
    assert [h.scores["rerank"] for h in hits] == sorted((h.scores["rerank"] for h in hits), reverse=True)
    assert all(h.score == h.scores["rerank"] and "fused" in h.scores for h in hits)

    # Blended: the cross-encoder's share of the final score is rerank_weight; past rerank_depth the first
    # stage's order continues.
    def ranking(searcher: RetrievalService, **options: Any) -> list[Any]:
        return searcher.search(
            SearchQuery.from_settings(service.settings.search, corpus_collection, text, top_k=15, **options)
        )

    first = [h.chunk.id for h in ranking(service, rerank=False)]
    blended = ranking(reranking, rerank=True, rerank_depth=10, rerank_weight=0.5)
    head, tail = blended[:10], blended[10:]
    assert {h.chunk.id for h in head} == set(first[:10])
    assert [h.chunk.id for h in tail] == first[10:]
    assert all("rerank" in h.scores for h in head) and not any("rerank" in h.scores for h in tail)
    assert [h.score for h in head] == sorted((h.score for h in head), reverse=True)
    assert all(0.0 <= h.score <= 1.0 for h in head)

    # A reranker whose manifest recommends a blend weight uses it when the request names none.
    recommending = tmp_path / "recommending-cross-encoder"
    shutil.copytree(folder, recommending)
    (recommending / "ragswap-retriever.json").write_text(
        json.dumps({"kind": "reranker", "metrics": {"recommended_rerank_weight": 0.5}})
    )
    defaulted = with_reranker(service, recommending)
    by_default = ranking(defaulted, rerank=True, rerank_depth=10)
    assert [(h.chunk.id, h.score) for h in by_default] == [(h.chunk.id, h.score) for h in blended]
    explicit = ranking(defaulted, rerank=True, rerank_depth=10, rerank_weight=1.0)
    assert all(h.score == h.scores["rerank"] for h in explicit[:10])


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        ({"metrics": {"recommended_rerank_weight": 0.3}}, 0.3),
        ({"metrics": {"recommended_rerank_weight": 7}}, 1.0),  # out of range: ignored
        ({"metrics": {}}, 1.0),
        (None, 1.0),  # no manifest: any CrossEncoder directory
        ("{not json", 1.0),
    ],
)
def test_recommended_rerank_weight_comes_from_the_manifest(
    tmp_path: Path, manifest: Any, expected: float
) -> None:
    if manifest is not None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        (tmp_path / "ragswap-retriever.json").write_text(text)
    assert recommended_rerank_weight(tmp_path) == expected


def test_blend_mixes_min_max_scaled_stage_scores() -> None:
    rerank = {"a": 5.0, "b": 1.0, "c": 3.0}
    first = {"a": 0.1, "b": 0.9, "c": 0.5}
    assert blend(rerank, first, 1.0) == rerank  # raw cross-encoder scores: thresholds still apply
    assert blend(rerank, first, 0.5) == pytest.approx({"a": 0.5, "b": 0.5, "c": 0.5})
    low = blend(rerank, first, 0.2)
    assert low == pytest.approx({"a": 0.2, "b": 0.8, "c": 0.5})


def test_filter_operators_run_in_the_engine(
    service: RetrievalService, corpus_collection: str, corpus: BeirData
) -> None:
    """Keyword equality and ``in``, integer and float ranges, booleans, ``ne``/``nin``, ``$or`` and ``$not``."""
    meta = {d.id: {**d.metadata, "num": i} for i, d in enumerate(corpus.documents())}
    text = "workshop on the island that makes goods"
    cases: list[tuple[dict[str, Any], Any]] = [
        ({"island": "Ostrand"}, lambda m: m["island"] == "Ostrand"),
        ({"island": {"in": ["Vesk", "Drask"]}}, lambda m: m["island"] in ("Vesk", "Drask")),
        ({"island": {"nin": ["Vesk", "Drask"]}}, lambda m: m["island"] not in ("Vesk", "Drask")),
        ({"kind": {"ne": "foundry"}}, lambda m: m.get("kind") != "foundry"),
        ({"founded": {"gte": 1800, "lt": 1850}}, lambda m: 1800 <= m.get("founded", 0) < 1850),
        ({"rating": {"gt": 4.5}}, lambda m: m.get("rating", 0) > 4.5),
        ({"rating": 2.1}, lambda m: m.get("rating") == 2.1),
        ({"certified": True}, lambda m: m.get("certified") is True),
        ({"certified": {"in": [False]}}, lambda m: m.get("certified") is False),
        (
            {"$or": [{"island": "Vesk"}, {"kind": "chronicle"}]},
            lambda m: m["island"] == "Vesk" or m["kind"] == "chronicle",
        ),
        (
            {"$not": {"island": "Vesk"}, "kind": "orchard"},
            lambda m: m["island"] != "Vesk" and m["kind"] == "orchard",
        ),
    ]
    for raw, expected in cases:
        allowed = {d for d, m in meta.items() if expected(m)}
        for mode in ("dense", "bm25", "hybrid"):
            hits = service.search(
                SearchQuery(
                    collection=corpus_collection, query=text, mode=mode, top_k=50, filter=parse_filter(raw)
                )  # type: ignore[arg-type]
            )
            got = {h.chunk.document_id for h in hits}
            assert got <= allowed, (raw, mode, got - allowed)
            assert got or mode == "bm25", (raw, mode)
        dense = service.search(
            SearchQuery(
                collection=corpus_collection, query=text, mode="dense", top_k=1000, filter=parse_filter(raw)
            )
        )
        assert {h.chunk.document_id for h in dense} == allowed, raw  # dense ranks every allowed document


def test_tuned_settings_apply_unless_the_request_sets_its_own(
    service: RetrievalService, corpus_collection: str, corpus: BeirData
) -> None:
    tuned = SearchOverrides(fusion="rrf", rrf_k=7, candidates=42, rerank_depth=11)
    defaults = SearchSettings(fusion="dbsf", rrf_k=60, candidates=100)
    q = SearchQuery(collection=corpus_collection, query="x")
    r = q.resolve(tuned, defaults)
    assert (r.fusion, r.rrf_k, r.candidates, r.rerank_depth, r.top_k) == ("rrf", 7, 42, 11, defaults.top_k)
    own = SearchQuery(collection=corpus_collection, query="x", fusion="dbsf", candidates=5).resolve(
        tuned, defaults
    )
    assert (own.fusion, own.candidates, own.rrf_k) == ("dbsf", 5, 7)
    assert (
        SearchQuery(collection=corpus_collection, query="x").resolve(SearchOverrides(), defaults).fusion
        == "dbsf"
    )
