"""``collections tune``: learning a collection's search settings from judged queries, with a held-apart report,
refusal when there are too few, storage with the collection, and use by default afterwards (service, CLI, HTTP)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from ragswap.config import Settings
from retrieval import (
    BeirData,
    RetrievalService,
    RetrievalSettings,
    SearchQuery,
    TuneOptions,
    TuneRefusedError,
    tune_collection,
)
from tests.retrieval.conftest import FIXTURE, copy_of_corpus, same_within_ties, tagged, with_reranker

ADMIN = {"Authorization": "Bearer sk-admin-0123456789"}


def _subset(corpus: BeirData, n: int) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    qids = sorted(corpus.qrels)[:n]
    return {q: corpus.queries[q] for q in qids}, {q: corpus.qrels[q] for q in qids}


def test_tuning_refuses_too_few_judged_queries(
    service: RetrievalService, corpus_collection: str, corpus: BeirData
) -> None:
    queries, qrels = _subset(corpus, 40)
    qrels["ghost"] = {"no-such-document": 1}  # judged, but nothing relevant is in the collection
    with pytest.raises(TuneRefusedError) as info:
        tune_collection(service, corpus_collection, queries, qrels)
    message = info.value.message
    assert "40 usable" in message and "1 of 41 judged left out" in message and "at least 30" in message
    assert service.store.spec(corpus_collection).search.fusion is None  # nothing stored


def test_tuning_chooses_on_tuning_queries_reports_held_apart_ones_and_stores_the_choice(
    service: RetrievalService, corpus: BeirData, chunk_vectors: dict[str, np.ndarray]
) -> None:
    name = copy_of_corpus(service, corpus, chunk_vectors, "tuned")
    queries, qrels = _subset(corpus, 160)
    stages: set[str] = set()
    # store_if_worse: stored whichever way the held-apart figures fall (what decides that: the test below)
    options = TuneOptions(held_out=0.3, store_if_worse=True)
    report = tune_collection(service, name, queries, qrels, options, lambda s, done, total: stages.add(s))
    assert {"baseline", "bm25", "fusion", "held-apart"} <= stages and report.stored
    assert report.tuning_queries + report.held_out_queries == report.judged_queries == 160
    assert 35 <= report.held_out_queries <= 60
    for side in (report.before, report.after):
        assert set(side) == {"ndcg@10", "recall@100", "mrr@10"}
        assert all(ci.low <= ci.mean <= ci.high for ci in side.values())
    # The choice is the best of the grid on the tuning queries, and it is stored with the collection.
    fusion_grid = {k: v for k, v in report.grid.items() if not k.startswith("bm25")}
    chosen = report.chosen["search"]
    assert max(fusion_grid.values()) == fusion_grid[_label(chosen)]
    spec = service.store.spec(name)
    assert spec.search.model_dump(exclude_none=True) == chosen
    assert spec.bm25.model_dump() == report.chosen["bm25"] and spec.tuning is not None
    assert spec.tuning["after"]["ndcg@10"]["mean"] == report.after["ndcg@10"].mean
    # Searches that do not set the options use the tuned ones.
    resolved = service.resolve(SearchQuery(collection=name, query="x"), spec)
    assert (resolved.fusion, resolved.candidates) == (chosen["fusion"], chosen["candidates"])
    # The tuned BM25 parameters re-weighed the stored vectors: BM25 ranks exactly like a collection built with them.
    fresh = "tuned-bm25-reference"
    service.create_collection(fresh, bm25=spec.bm25, payload_indexes={"island": "keyword", "num": "integer"})
    service.ingest(fresh, tagged(corpus), vectors=chunk_vectors)
    for qid in sorted(queries)[:20]:
        a = service.search(SearchQuery(collection=name, query=queries[qid], mode="bm25", top_k=10))
        b = service.search(SearchQuery(collection=fresh, query=queries[qid], mode="bm25", top_k=10))
        assert same_within_ties(
            [(h.section_id, h.score) for h in a], [(h.section_id, h.score) for h in b], 1e-4
        )
    service.delete_collection(fresh)
    service.delete_collection(name)


def _agreeing(
    service: RetrievalService, name: str, queries: dict[str, str], **options: object
) -> dict[str, dict[str, int]]:
    """Judgements that agree with one way of searching: each query's top 10 under ``options`` are its relevant
    documents, graded by rank (so that search scores nDCG@10 = 1 on them)."""
    spec = service.store.spec(name)
    ids = sorted(queries)
    vectors = dict(zip(ids, service.embedder(spec).encode([queries[q] for q in ids]), strict=True))
    ranked = {
        q: service.rank_documents(
            SearchQuery(collection=name, query=queries[q], top_k=10, vector=vectors[q], **options)  # type: ignore[arg-type]
        )
        for q in ids
    }
    return {q: {d: 10 - rank for rank, d in enumerate(docs)} for q, docs in ranked.items()}


def test_tuning_stores_a_choice_only_if_it_ranks_the_held_apart_queries_no_worse(
    service: RetrievalService, corpus: BeirData, chunk_vectors: dict[str, np.ndarray]
) -> None:
    """Judgements made to agree with one point of the grid (RRF k=2) on the tuning queries and with the
    collection's settings (the defaults, DBSF) on the held-apart ones: the grid chooses RRF k=2, which ranks the
    held-apart queries worse, so nothing changes (BM25 weights included) and the report says why; with
    ``store_if_worse`` it is stored all the same. Judgements that agree with DBSF everywhere then make DBSF the
    choice, which ranks the held-apart queries better than the stored RRF k=2: stored."""
    from retrieval.tune import split

    name = copy_of_corpus(service, corpus, chunk_vectors, "tuned-gate")
    queries, _ = _subset(corpus, 120)
    candidates = service.settings.search.candidates
    rrf = _agreeing(service, name, queries, mode="hybrid", fusion="rrf", rrf_k=2, candidates=candidates)
    dbsf = _agreeing(service, name, queries, mode="hybrid")
    options = TuneOptions(held_out=0.3, candidates=[candidates])
    tuning, held = split(sorted(queries), options.held_out, options.seed)
    mixed = {q: rrf[q] for q in tuning} | {q: dbsf[q] for q in held}
    first = service.store.spec(name)
    probe = [
        (h.section_id, h.score)
        for h in service.search(SearchQuery(collection=name, query=queries[min(queries)], mode="bm25"))
    ]
    worse = tune_collection(service, name, queries, mixed, options)
    assert worse.chosen["search"]["fusion"] == "rrf" and worse.chosen["search"]["rrf_k"] == 2
    assert worse.after["ndcg@10"].mean < worse.before["ndcg@10"].mean
    assert not worse.stored and any("previous settings are kept" in n for n in worse.notes), worse.notes
    kept = service.store.spec(name)
    assert kept.search == first.search and kept.bm25 == first.bm25 and kept.tuning == first.tuning
    again = [
        (h.section_id, h.score)
        for h in service.search(SearchQuery(collection=name, query=queries[min(queries)], mode="bm25"))
    ]
    assert same_within_ties(probe, again, 1e-5)  # the BM25 vectors were re-weighed back, if at all

    forced = tune_collection(
        service, name, queries, mixed, options.model_copy(update={"store_if_worse": True})
    )
    assert forced.stored and any("stored anyway" in n for n in forced.notes)
    assert service.store.spec(name).search.rrf_k == 2

    better = tune_collection(service, name, queries, dbsf, options.model_copy(update={"bm25": False}))
    assert better.after["ndcg@10"].mean > better.before["ndcg@10"].mean and better.stored
    assert service.store.spec(name).search.fusion == "dbsf"
    service.delete_collection(name)


def _label(chosen: dict[str, object]) -> str:
    fusion = chosen["fusion"]
    label = str(fusion)
    if fusion != "dbsf":
        label += f" k={chosen['rrf_k']}"
    if fusion == "weighted":
        label += f" w={chosen['weight']}"
    return f"{label} candidates={chosen['candidates']}"


def test_tuning_learns_the_rerank_depth_and_weight(
    service: RetrievalService,
    corpus: BeirData,
    chunk_vectors: dict[str, np.ndarray],
    untrained_cross_encoder: Path,
) -> None:
    """With a reranker configured (here a CrossEncoder with an untrained head: the mechanics, not its quality)."""
    reranking = with_reranker(service, untrained_cross_encoder)
    name = copy_of_corpus(service, corpus, chunk_vectors, "tuned-rerank")
    queries, qrels = _subset(corpus, 16)
    options = TuneOptions(
        held_out=0.25,
        min_tuning=8,
        min_held_out=3,
        bm25=False,
        candidates=[50],
        rerank_depths=[10],
        store_if_worse=True,  # an untrained head may well rank worse: stored all the same, to check storage
    )
    report = tune_collection(reranking, name, queries, qrels, options)
    chosen = report.chosen["search"]
    assert {"rerank_depth", "rerank_weight"} <= set(chosen)
    rerank_grid = {k: v for k, v in report.grid.items() if k.startswith("rerank")}
    assert (
        len(rerank_grid) == 10
        and max(rerank_grid.values())
        == rerank_grid[f"rerank depth={chosen['rerank_depth']} weight={chosen['rerank_weight']}"]
    )
    spec = service.store.spec(name)
    assert (spec.search.rerank_depth, spec.search.rerank_weight) == (
        chosen["rerank_depth"],
        chosen["rerank_weight"],
    )
    service.delete_collection(name)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    from serving.errors import install_error_handlers
    from serving.retrieval import router as retrieval_router
    from serving.settings import ServerSettings

    settings = Settings(
        server=ServerSettings(
            api_keys=["sk-user-0123456789"],
            admin_keys=["sk-admin-0123456789"],
            state_dir=tmp_path_factory.mktemp("tune-api"),
        ),
        retrieval=RetrievalSettings(),
    )
    app = FastAPI(lifespan=retrieval_router.lifespan)
    app.state.settings = settings
    install_error_handlers(app)
    retrieval_router.attach_router(app)
    with TestClient(app) as client:
        yield client


def test_tune_over_http_and_the_cli(api: TestClient, corpus: BeirData, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ragswap.cli import app as cli

    queries, qrels = _subset(corpus, 60)
    wanted = sorted({d for rel in qrels.values() for d in rel} | set(sorted(corpus.corpus)[:40]))
    docs = [{"id": d, "text": corpus.corpus[d], "metadata": corpus.metadata[d]} for d in wanted]
    assert api.post("/v1/collections", json={"name": "kb"}, headers=ADMIN).status_code == 201
    assert (
        api.post("/v1/collections/kb/documents", json={"documents": docs}, headers=ADMIN).status_code == 200
    )
    few = {"queries": dict(list(queries.items())[:20]), "qrels": qrels}
    r = api.post("/v1/collections/kb/tune", json=few, headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_few_judged_queries"
    assert api.post("/v1/collections/kb/tune", json=few).status_code == 401
    body = {
        "queries": queries,
        "qrels": qrels,
        # store_if_worse: stored whichever way the held-apart figures fall (kept out otherwise: tested above)
        "options": {"bm25": False, "held_out": 0.4, "candidates": [50, 100], "store_if_worse": True},
    }
    r = api.post("/v1/collections/kb/tune", json=body, headers=ADMIN)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["stored"] and report["held_out_queries"] + report["tuning_queries"] == 60
    described = api.get("/v1/collections/kb", headers=ADMIN).json()
    assert described["search"]["fusion"] == report["chosen"]["search"]["fusion"]
    assert described["tuning"]["after"]["ndcg@10"]["mean"] == report["after"]["ndcg@10"]["mean"]
    hit = api.post(
        "/v1/retrieve", json={"collection": "kb", "query": queries[sorted(queries)[0]]}, headers=ADMIN
    )
    assert hit.status_code == 200 and hit.json()["group_by"] == "document"

    # The CLI runs the same code on an embedded store of its own (the API's store is held by its process).
    state = tmp_path / "cli-state"
    (tmp_path / "docs.jsonl").write_text(
        "".join(json.dumps({"_id": d["id"], "text": d["text"]}) + "\n" for d in docs)
    )
    runner = CliRunner()
    env = {"RAGSWAP_SERVER__STATE_DIR": str(state)}
    assert runner.invoke(cli, ["ingest", str(tmp_path / "docs.jsonl"), "-c", "kb"], env=env).exit_code == 0
    args = ["collections", "tune", "kb", "--queries", str(FIXTURE / "queries.jsonl")]
    args += [
        "--qrels",
        str(FIXTURE / "qrels" / "train.tsv"),
        "--held-out",
        "0.4",
        "--no-bm25",
        "--dry-run",
        "--json",
    ]
    done = runner.invoke(cli, args, env=env)
    assert done.exit_code == 0, done.output
    printed = json.loads(done.output[done.output.index("{\n") :])
    assert printed["stored"] is False and printed["judged_queries"] >= 60  # queries whose documents are in
    missing = runner.invoke(cli, [*args[:3], "--queries", str(tmp_path / "nope.jsonl"), *args[5:]], env=env)
    assert missing.exit_code == 1 and "not found" in missing.output
