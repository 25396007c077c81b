"""Search quality and mechanics on real SciFact data with the real MiniLM embedder and bm25s."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from retrieval import fusion
from retrieval.errors import InvalidSearchError
from retrieval.filters import parse_filter
from retrieval.models import recommended_rerank_weight
from retrieval.search import SearchQuery
from retrieval.service import RetrievalService

SciFactSubset = Any  # the `scifact` fixture (tests/retrieval/conftest.py)

MODES = [
    ("dense", "rrf"),
    ("bm25", "rrf"),
    ("hybrid", "rrf"),
    ("hybrid", "weighted"),
    ("hybrid", "dbsf"),
]


def _top_docs(
    service: RetrievalService, collection: str, text: str, mode: str, fusion: str, k: int = 10
) -> list[str]:
    q = SearchQuery.from_settings(
        service.settings.search, collection, text, mode=mode, fusion=fusion, top_k=50
    )  # type: ignore[arg-type]
    seen: list[str] = []
    for hit in service.search(q):
        if hit.chunk.document_id not in seen:
            seen.append(hit.chunk.document_id)
    return seen[:k]


@pytest.mark.parametrize(("mode", "fusion"), MODES)
def test_relevant_documents_rank_in_top_10(
    service: RetrievalService, scifact_collection: str, scifact: SciFactSubset, mode: str, fusion: str
) -> None:
    found = 0
    for qid, text in scifact.queries.items():
        top = _top_docs(service, scifact_collection, text, mode, fusion)
        found += bool(scifact.qrels[qid] & set(top))
    # Every mode must find a relevant document for most queries (measured: 18-20 of 20).
    assert found >= int(0.8 * len(scifact.queries)), f"{mode}/{fusion}: {found}/{len(scifact.queries)}"


def test_int8_collection_ranks_like_float32(
    service: RetrievalService, scifact_collection: str, scifact: SciFactSubset, tmp_path: Path
) -> None:
    """An ``int8`` collection embeds documents and queries with the quantized embedder and ranks about as well."""
    import torch

    spec = service.create_collection("scifact_int8", embedding_precision="int8")
    service.ingest("scifact_int8", scifact.documents)
    assert service.describe("scifact_int8").spec.embedding_precision == "int8"
    int8, fp32 = service.embedder(spec), service.embedder(service.describe(scifact_collection).spec)
    assert int8 is not fp32 and int8.precision == "int8"
    linears = [m for m in int8.model.modules() if "quantized" in type(m).__module__]
    assert linears and not any(type(m) is torch.nn.Linear for m in int8.model.modules())
    texts = list(scifact.queries.values())
    cosine = (int8.encode(texts) * fp32.encode(texts)).sum(axis=1)
    assert float(cosine.min()) > 0.9 and float(cosine.max()) < 0.9999  # close, but really a different model

    found = {"int8": 0, "float32": 0}
    overlap = 0
    for qid, text in scifact.queries.items():
        top8 = _top_docs(service, "scifact_int8", text, "dense", "rrf")
        top32 = _top_docs(service, scifact_collection, text, "dense", "rrf")
        found["int8"] += bool(scifact.qrels[qid] & set(top8))
        found["float32"] += bool(scifact.qrels[qid] & set(top32))
        overlap += len(set(top8) & set(top32))
    assert found["int8"] >= found["float32"] - 1, found
    assert overlap >= 0.7 * 10 * len(scifact.queries)
    service.delete_collection("scifact_int8")


def test_hits_carry_every_stage_score(
    service: RetrievalService, scifact_collection: str, scifact: SciFactSubset
) -> None:
    text = next(iter(scifact.queries.values()))
    hits = service.search(
        SearchQuery.from_settings(service.settings.search, scifact_collection, text, top_k=5)
    )
    assert len(hits) == 5
    for hit in hits:
        assert {"dense", "bm25", "fused"} <= set(hit.scores)
        assert hit.score == hit.scores["fused"]
        assert -1.0 <= hit.scores["dense"] <= 1.0
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_filters_restrict_results(
    service: RetrievalService, scifact_collection: str, scifact: SciFactSubset
) -> None:
    text = next(iter(scifact.queries.values()))
    for mode in ("dense", "bm25", "hybrid"):
        q = SearchQuery.from_settings(
            service.settings.search,
            scifact_collection,
            text,
            mode=mode,
            top_k=20,  # type: ignore[arg-type]
            filter=parse_filter({"parity": "odd", "num": {"gte": 1000}}),
        )
        hits = service.search(q)
        assert hits, mode
        assert all(h.chunk.metadata["parity"] == "odd" and h.chunk.metadata["num"] >= 1000 for h in hits)
    one = scifact.documents[5].id
    q = SearchQuery.from_settings(
        service.settings.search, scifact_collection, text, filter=parse_filter({"document_id": {"in": [one]}})
    )
    assert {h.chunk.document_id for h in service.search(q)} == {one}


def test_rerank_reorders_the_fused_candidates(
    service: RetrievalService, scifact_collection: str, scifact: SciFactSubset, tmp_path: Path
) -> None:
    """Two-stage mechanics with a CrossEncoder built from MiniLM whose head is untrained (no trained reranker
    weights exist offline, and training one takes minutes: ``bench/retrieval.py`` trains and scores it)."""
    from sentence_transformers import CrossEncoder

    from ragswap.model_store import ModelSettings, resolve_model

    text = next(iter(scifact.queries.values()))
    plain = SearchQuery.from_settings(
        service.settings.search, scifact_collection, text, top_k=10, rerank=False
    )
    with pytest.raises(InvalidSearchError):
        service.search(
            SearchQuery.from_settings(service.settings.search, scifact_collection, text, rerank=True)
        )
    folder = tmp_path / "untrained-cross-encoder"
    CrossEncoder(resolve_model("all-minilm-l6-v2", ModelSettings()), num_labels=1, device="cpu").save(
        str(folder)
    )
    reranking = RetrievalService(
        service.settings.model_copy(update={"reranker": str(folder)}),
        service.models,
        Path("/x"),
        store=service.store,
    )
    q = SearchQuery.from_settings(
        service.settings.search, scifact_collection, text, top_k=5, rerank=True, rerank_depth=10
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
            SearchQuery.from_settings(service.settings.search, scifact_collection, text, top_k=15, **options)
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
    defaulted = RetrievalService(
        service.settings.model_copy(update={"reranker": str(recommending)}),
        service.models,
        Path("/x"),
        store=service.store,
    )
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
    assert fusion.blend(rerank, first, 1.0) == rerank  # raw cross-encoder scores: thresholds still apply
    assert fusion.blend(rerank, first, 0.5) == pytest.approx({"a": 0.5, "b": 0.5, "c": 0.5})
    low = fusion.blend(rerank, first, 0.2)
    assert low == pytest.approx({"a": 0.2, "b": 0.8, "c": 0.5})
