"""Reranker and embedder fine-tuning on part of SciFact's train judgements, scored on held-apart train queries."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from training.retrievers.beir import load_beir, split_queries

from ragswap.model_store import ModelSettings
from retrieval.models import load_reranker
from tests.training.conftest import SCIFACT
from training import RetrieverManifest, train_embedder, train_reranker
from training.retrievers.reranker import BLEND_WEIGHTS

pytestmark = pytest.mark.skipif(not (SCIFACT / "corpus.jsonl").is_file(), reason=f"SciFact not at {SCIFACT}")


@pytest.fixture(scope="module")
def query_split() -> tuple[list[str], list[str]]:
    """A small, seeded split of SciFact train queries (the held-apart ones are never trained on)."""
    train, held = split_queries(list(load_beir(SCIFACT).qrels), 0.5, seed=7)
    rng = random.Random(7)
    return rng.sample(train, 120), rng.sample(held, 40)


def test_reranker_ranks_held_apart_queries_better(
    query_split: tuple[list[str], list[str]], tmp_path: Path
) -> None:
    train_ids, eval_ids = query_split
    result = train_reranker(
        SCIFACT,
        tmp_path / "reranker",
        train_query_ids=train_ids,
        eval_query_ids=eval_ids,
        negatives=3,
        batch_size=16,
        max_length=192,
        rerank_depth=20,
        max_corpus_docs=1500,
        progress=False,
    )
    assert result.ndcg10_after > result.ndcg10_before + 0.02, result
    manifest = RetrieverManifest.read(tmp_path / "reranker")
    assert manifest.kind == "reranker" and not set(manifest.data["train_query_ids"]) & set(eval_ids)
    assert (tmp_path / "reranker" / "config.json").is_file()
    # The blend with BM25 that ranked the held-apart queries best is recorded, and search picks it up.
    blends = manifest.metrics["blend_ndcg10"]
    assert set(blends) == {str(w) for w in BLEND_WEIGHTS}
    weight = manifest.metrics["recommended_rerank_weight"]
    assert blends[str(weight)] == max(blends.values())
    assert load_reranker(str(tmp_path / "reranker"), ModelSettings()).recommended_weight == weight


def test_embedder_ranks_held_apart_queries_better(tmp_path: Path) -> None:
    # More queries and larger batches than the reranker needs: with 120 queries in batches of 16 the embedder
    # stayed level (0.578 -> 0.576 on 40 held-apart queries); in-batch negatives need the batch.
    train, held = split_queries(list(load_beir(SCIFACT).qrels), 0.5, seed=7)
    rng = random.Random(7)
    train_ids, eval_ids = rng.sample(train, 256), rng.sample(held, 60)
    result = train_embedder(
        SCIFACT,
        tmp_path / "embedder",
        train_query_ids=train_ids,
        eval_query_ids=eval_ids,
        epochs=3,  # half the default: enough to beat the start here, and half the CI time
        batch_size=32,
        max_length=192,
        max_corpus_docs=1500,
        progress=False,
    )
    assert result.ndcg10_after > result.ndcg10_before, result
    assert RetrieverManifest.read(tmp_path / "embedder").metrics["ndcg10_after"] == result.ndcg10_after
