"""Retrieval benchmark on a BEIR dataset: quality per mode, query latency at 5k docs and at 100k chunks,
ingestion throughput against raw ``SentenceTransformer.encode``, and the same for ``int8`` collections.

    .venv/bin/python bench/retrieval.py [--dataset DIR] [--qrels FILE] [--reranker PATH] [--embedder PATH]

Judged queries are split deterministically by a hash of the query id into a tuning and an evaluation half;
every quality figure is measured on the evaluation half. Off-the-shelf modes tune BM25's k1/b and the fusion
on the tuning half. The domain-tuned pipeline trains an embedder and a cross-encoder reranker (``training``) on
80 % of the tuning half and picks fusion and the rerank blend on the other 20 %. Writes ``bench/results/retrieval.json``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import inspect
import json
import logging
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from retrieval.bm25 import Bm25Index
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench._common import machine, percentile, write_results
from ragswap.model_store import ModelSettings, resolve_model
from retrieval.loaders import jsonl_row_to_document
from retrieval.search import SearchQuery
from retrieval.service import RetrievalService
from retrieval.settings import Bm25Settings, RetrievalSettings
from retrieval.types import Chunk, Document

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "scifact"
CACHE = Path(os.environ.get("RAGSWAP_HOME", Path.home() / ".cache" / "ragswap")) / "bench"
MODES = ["bm25", "dense", "hybrid_rrf", "hybrid_weighted", "hybrid_rerank"]
console = Console()
ONLY_5K: dict[str, dict[str, float]] = {}
ONLY_100K: dict[str, dict[str, float]] = {}
INT8_QUALITY: dict[str, dict[str, float]] = {}
"""Quality of the off-the-shelf modes on a collection embedded with ``embedding_precision="int8"``."""
QUERY_VECTORS: dict[str, np.ndarray] = {}
"""Query embeddings computed once in a batch for the quality passes (latency passes embed each query)."""
logger = logging.getLogger("bench.retrieval")


# -- data ---------------------------------------------------------------------------------------------------
def load_beir(
    folder: Path, qrels_file: Path
) -> tuple[list[Document], dict[str, str], dict[str, dict[str, int]]]:
    docs = [
        jsonl_row_to_document(json.loads(line), "corpus")
        for line in (folder / "corpus.jsonl").open()
        if line.strip()
    ]
    queries = {}
    for line in (folder / "queries.jsonl").open():
        if line.strip():
            row = json.loads(line)
            queries[str(row["_id"])] = str(row["text"])
    qrels: dict[str, dict[str, int]] = {}
    with qrels_file.open() as fh:
        for row in csv.reader(fh, delimiter="\t"):
            if not row or row[0] == "query-id":
                continue
            if int(row[2]) > 0:
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    qrels = {q: r for q, r in qrels.items() if q in queries}
    return docs, queries, qrels


def id_byte(qid: str, i: int) -> int:
    """Byte ``i`` of sha1(query id): the deterministic, order-free key of every query split here."""
    return hashlib.sha1(qid.encode()).digest()[i]


def split(qids: list[str]) -> tuple[list[str], list[str]]:
    """Deterministic halves: even/odd first byte of sha1(query id) → tuning/evaluation."""
    tune = sorted(q for q in qids if id_byte(q, 0) % 2 == 0)
    evals = sorted(q for q in qids if id_byte(q, 0) % 2 == 1)
    return tune, evals


# -- metrics ------------------------------------------------------------------------------------------------
def doc_ranking(hits: list[Any]) -> list[str]:
    """Chunks → documents, each at the rank of its best chunk."""
    seen: list[str] = []
    for h in hits:
        if h.chunk.document_id not in seen:
            seen.append(h.chunk.document_id)
    return seen


def ndcg10(ranked: list[str], rel: dict[str, int]) -> float:
    dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
    ideal = sum(r / math.log2(i + 2) for i, r in enumerate(sorted(rel.values(), reverse=True)[:10]))
    return dcg / ideal if ideal else 0.0


def recall100(ranked: list[str], rel: dict[str, int]) -> float:
    return len(set(ranked[:100]) & set(rel)) / len(rel)


def mrr10(ranked: list[str], rel: dict[str, int]) -> float:
    return next((1.0 / (i + 1) for i, d in enumerate(ranked[:10]) if d in rel), 0.0)


# -- embeddings cache ---------------------------------------------------------------------------------------
def cache_file(model_path: str, tag: str) -> Path:
    key = hashlib.sha1(f"{model_path}|{tag}".encode()).hexdigest()[:16]
    return CACHE / f"embeddings-{key}.npz"


def load_cache(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    data = np.load(path)
    return dict(zip(data["ids"].tolist(), data["vectors"], strict=True))


def save_cache(path: Path, vectors: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = list(vectors)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, ids=np.array(ids), vectors=np.stack([vectors[i] for i in ids]))
    tmp.rename(path)


# -- stages -------------------------------------------------------------------------------------------------
def search_docs(service: RetrievalService, q: SearchQuery) -> list[str]:
    return doc_ranking(service.search(q))


def evaluate(
    service: RetrievalService,
    collection: str,
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    qids: list[str],
    vectors: dict[str, np.ndarray] | None = None,
    **options: Any,
) -> dict[str, float]:
    """Mean nDCG@10, recall@100 and MRR@10 over ``qids``; ``vectors``: the queries' embeddings (default: the
    base embedder's, :data:`QUERY_VECTORS`)."""
    vectors = QUERY_VECTORS if vectors is None else vectors
    scores = {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    for qid in qids:
        q = SearchQuery.from_settings(
            service.settings.search,
            collection,
            queries[qid],
            top_k=300,
            candidates=300,
            vector=vectors.get(qid),
            **options,
        )
        ranked = search_docs(service, q)
        scores["ndcg@10"] += ndcg10(ranked, qrels[qid])
        scores["recall@100"] += recall100(ranked, qrels[qid])
        scores["mrr@10"] += mrr10(ranked, qrels[qid])
    return {k: round(v / len(qids), 4) for k, v in scores.items()}


def latencies(
    service: RetrievalService,
    collection: str,
    texts: list[str],
    vectors: list[np.ndarray] | None = None,
    **options: Any,
) -> dict[str, float]:
    """p50/p95 ms per query; with ``vectors`` the query embedding is excluded (search-only)."""
    vecs: list[np.ndarray | None] = list(vectors) if vectors is not None else [None] * len(texts)
    warm = SearchQuery.from_settings(service.settings.search, collection, texts[0], vector=vecs[0], **options)
    service.search(warm)
    times = []
    for text, vec in zip(texts, vecs, strict=True):
        q = SearchQuery.from_settings(
            service.settings.search, collection, text, top_k=10, vector=vec, **options
        )
        start = time.perf_counter()
        service.search(q)
        times.append((time.perf_counter() - start) * 1000)
    return {"p50": round(percentile(times, 50), 2), "p95": round(percentile(times, 95), 2)}


def mode_options(mode: str, tuned: dict[str, Any]) -> dict[str, Any]:
    if mode == "bm25":
        return {"mode": "bm25", "rerank": False}
    if mode == "dense":
        return {"mode": "dense", "rerank": False}
    if mode == "hybrid_rrf":
        return {"mode": "hybrid", "fusion": "rrf", "rrf_k": tuned["rrf_k"], "rerank": False}
    if mode == "hybrid_weighted":
        return {"mode": "hybrid", "fusion": "weighted", "weight": tuned["weight"], "rerank": False}
    if mode == "dense_tuned":
        return {"mode": "dense", "rerank": False}
    hybrid = {"mode": "hybrid", "fusion": tuned["fusion"], "rrf_k": tuned["rrf_k"], "weight": tuned["weight"]}
    if mode == "hybrid_tuned":
        return {**hybrid, "rerank": False}
    return {
        **hybrid,
        "rerank": True,
        "rerank_depth": tuned["rerank_depth"],
        "rerank_weight": tuned.get("rerank_weight", 1.0),
    }


def tune_bm25(
    chunks: list[Chunk], queries: dict[str, str], qrels: dict[str, dict[str, int]], tune_ids: list[str]
) -> tuple[Bm25Settings, dict[str, float]]:
    """Grid over BM25's ``k1`` and ``b`` on the tuning queries (BM25 alone, nDCG@10), with the same
    :class:`Bm25Index` the collections use. Chunks are near-uniform in length, so the length normalisation that
    suits whole documents (``b=0.75``) is often too strong for them."""
    doc_of = np.array([c.document_id for c in chunks])
    texts = [c.text for c in chunks]
    grid: dict[str, float] = {}
    best, best_score = Bm25Settings(), -1.0
    for k1 in (0.9, 1.2, 1.5, 2.0):
        for b in (0.3, 0.4, 0.5, 0.6, 0.75):
            params = Bm25Settings(k1=k1, b=b)
            index = Bm25Index.build(texts, params)
            total = 0.0
            for qid in tune_ids:
                scores = index.scores(queries[qid])
                top = np.argsort(-scores, kind="stable")[:300]
                total += ndcg10(list(dict.fromkeys(doc_of[top].tolist())), qrels[qid])
            score = grid[f"k1={k1},b={b}"] = round(total / len(tune_ids), 4)
            if score > best_score:
                best, best_score = params, score
    return best, grid


def tune_fusion(
    service: RetrievalService,
    collection: str,
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    tune_ids: list[str],
    vectors: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Grid over RRF k and the weighted-fusion weight on the tuning queries (nDCG@10)."""
    grid: dict[str, float] = {}
    best_k, best_w = 60, 0.3
    for k in (5, 10, 20, 40, 60, 100):
        grid[f"rrf_k={k}"] = evaluate(
            service,
            collection,
            queries,
            qrels,
            tune_ids,
            vectors,
            mode="hybrid",
            fusion="rrf",
            rrf_k=k,
            rerank=False,
        )["ndcg@10"]
        if grid[f"rrf_k={k}"] > grid.get(f"rrf_k={best_k}", -1):
            best_k = k
    for w in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
        grid[f"weight={w}"] = evaluate(
            service,
            collection,
            queries,
            qrels,
            tune_ids,
            vectors,
            mode="hybrid",
            fusion="weighted",
            weight=w,
            rerank=False,
        )["ndcg@10"]
        if grid[f"weight={w}"] > grid.get(f"weight={best_w}", -1):
            best_w = w
    fusion = "rrf" if grid[f"rrf_k={best_k}"] >= grid[f"weight={best_w}"] else "weighted"
    return {"rrf_k": best_k, "weight": best_w, "fusion": fusion}, grid


def fit_dev_split(tune_ids: list[str]) -> tuple[list[str], list[str]]:
    """Tuning half -> (fit, dev): the embedder and reranker learn from ``fit``; fusion and the rerank blend are
    chosen on ``dev``, queries neither model has seen (so the blend does not favour an overfitted model)."""
    fit = [q for q in tune_ids if id_byte(q, 1) % 5 != 0]
    dev = [q for q in tune_ids if id_byte(q, 1) % 5 == 0]
    return fit, dev


def trained_model(
    kind: str, args: argparse.Namespace, fit_ids: list[str], dev_ids: list[str]
) -> tuple[str | None, dict[str, Any]]:
    """A domain-trained reranker or embedder: given on the command line, cached from an earlier run with the same
    data and queries, or trained now with ``training``'s defaults (nDCG@10 before/after on ``dev_ids``)."""
    given = args.reranker if kind == "reranker" else args.embedder
    if given:
        return str(given), {"source": "given", "path": str(given)}
    from training import train_embedder, train_reranker

    train = train_reranker if kind == "reranker" else train_embedder
    defaults = {n: p.default for n, p in inspect.signature(train).parameters.items() if n != "progress"}
    key = hashlib.sha1(
        f"{kind}|{args.dataset.resolve()}|{args.qrels.resolve()}|{','.join(fit_ids)}|{args.train_steps}|"
        f"{sorted(defaults.items())}".encode()
    ).hexdigest()[:12]
    out = CACHE / f"{kind}-{key}"
    if not (out / "config.json").is_file():
        if args.no_train:
            return None, {"source": "none (--no-train)"}
        console.print(f"training the {kind} on {len(fit_ids)} tuning queries -> {out}")
        try:
            train(
                args.dataset,
                out,
                train_query_ids=fit_ids,
                eval_query_ids=dev_ids,
                split=args.qrels.stem,
                max_steps=args.train_steps,
                progress=True,
            )
        except Exception as exc:  # report the other modes even when training breaks
            logger.exception("%s training failed", kind)
            return None, {"source": f"training failed: {type(exc).__name__}: {exc}"}
    from training.retrievers.common import RetrieverManifest

    manifest = RetrieverManifest.read(out)
    return str(out), {
        "source": "trained by this benchmark (cached)",
        "path": str(out),
        "train_queries": len(manifest.data.get("train_query_ids", [])),
        "dev_ndcg10_before": round(manifest.metrics["ndcg10_before"], 4),
        "dev_ndcg10_after": round(manifest.metrics["ndcg10_after"], 4),
        "steps": manifest.metrics.get("steps"),
        "train_seconds": manifest.metrics.get("wall_seconds"),
        "hyperparameters": manifest.hyperparameters,
    }


def encode_cached(
    service: RetrievalService, spec: Any, chunks: list[Chunk], dataset: Path
) -> dict[str, np.ndarray]:
    """Chunk vectors of ``spec``'s embedder, cached across runs (encoding the corpus takes minutes here)."""
    model_path = resolve_model(spec.embedding_model, ModelSettings())
    tag = f"{dataset.resolve()}|{spec.chunking.model_dump_json()}"
    if spec.embedding_precision != "float32":
        tag += f"|{spec.embedding_precision}"
    cache_path = cache_file(model_path, tag)
    cache = load_cache(cache_path)
    missing = [c for c in chunks if c.id not in cache]
    if missing:
        with Progress(console=console) as bar:
            task = bar.add_task(
                f"encoding {len(missing)} chunks (cached in {cache_path})", total=len(missing)
            )
            for s in range(0, len(missing), 512):
                block = missing[s : s + 512]
                vecs = service.encode_chunks(spec, block)
                cache.update({c.id: v for c, v in zip(block, vecs, strict=True)})
                save_cache(cache_path, cache)
                bar.update(task, completed=s + len(block))
    return cache


def memoize_scores(reranker: Any) -> None:
    """Cross-encoder scores per (query, passage) kept for the run: the blend grid rescores the same pairs."""
    score, memo = reranker.score, {}

    def cached(query: str, passages: list[str], batch_size: int = 32) -> np.ndarray:
        todo = [p for p in dict.fromkeys(passages) if (query, p) not in memo]
        if todo:
            memo.update(zip(((query, p) for p in todo), score(query, todo, batch_size).tolist(), strict=True))
        return np.asarray([memo[(query, p)] for p in passages], dtype=np.float32)

    reranker.score = cached


def tuned_pipeline(
    args: argparse.Namespace,
    service: RetrievalService,
    docs: list[Document],
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    tune_ids: list[str],
    eval_ids: list[str],
    bm25: Bm25Settings,
) -> tuple[dict[str, Any], dict[str, dict[str, float]], dict[str, Any]]:
    """The domain-tuned pipeline: trained embedder (its own collection), BM25, fusion chosen on dev queries, and
    the trained cross-encoder blended with the fused score (blend weight chosen on dev queries)."""
    from retrieval.models import load_reranker

    fit_ids, dev_ids = fit_dev_split(tune_ids)
    embedder, embedder_info = trained_model("embedder", args, fit_ids, dev_ids)
    reranker, reranker_info = trained_model("reranker", args, fit_ids, dev_ids)
    info: dict[str, Any] = {
        "fit_queries": len(fit_ids),
        "dev_queries": len(dev_ids),
        "embedder": embedder_info,
        "reranker": reranker_info,
    }
    quality: dict[str, dict[str, float]] = {}
    collection, vectors = "corpus", QUERY_VECTORS
    if embedder:
        spec = service.create_collection("corpus_tuned", embedding_model=embedder, bm25=bm25)
        chunks = service.chunk_documents(spec, docs)
        service.ingest(spec.name, docs, vectors=encode_cached(service, spec, chunks, args.dataset))
        judged = sorted(qrels)
        vectors = dict(zip(judged, service.embedder(spec).encode([queries[q] for q in judged]), strict=True))
        collection = spec.name
        quality["dense_tuned"] = evaluate(
            service, collection, queries, qrels, eval_ids, vectors, **mode_options("dense_tuned", {})
        )
    tuned, grid = tune_fusion(service, collection, queries, qrels, dev_ids, vectors)
    tuned.update(rerank_depth=args.rerank_depth, bm25=bm25.model_dump())
    info.update({"collection": collection, "fusion_grid_dev_ndcg@10": grid})
    quality["hybrid_tuned"] = evaluate(
        service, collection, queries, qrels, eval_ids, vectors, **mode_options("hybrid_tuned", tuned)
    )
    if reranker:
        service.settings = service.settings.model_copy(update={"reranker": reranker})
        memoize_scores(load_reranker(reranker, service.models))
        blend: dict[str, float] = {}
        for w in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0):
            options = mode_options("hybrid_rerank", {**tuned, "rerank_weight": w})
            blend[f"rerank_weight={w}"] = evaluate(
                service, collection, queries, qrels, dev_ids, vectors, **options
            )["ndcg@10"]
        best = max(blend, key=lambda k: blend[k])
        tuned["rerank_weight"] = float(best.split("=")[1])
        info["blend_grid_dev_ndcg@10"] = blend
        quality["hybrid_rerank"] = evaluate(
            service, collection, queries, qrels, eval_ids, vectors, **mode_options("hybrid_rerank", tuned)
        )
        del load_reranker(reranker, service.models).score  # latency runs must pay for every score
    info["tuned"] = tuned
    return tuned, quality, info


def ingest_throughput(service: RetrievalService, chunks: list[Chunk], model_path: str) -> dict[str, float]:
    """Same chunks, side by side: the full ingest path (encode + Qdrant + index rebuild) vs ``encode`` alone, and
    the ingest path of an ``int8`` collection."""
    from sentence_transformers import SentenceTransformer

    texts = [c.text for c in chunks]
    raw = SentenceTransformer(model_path, device="cpu")
    raw.encode(texts[:64], batch_size=64)
    start = time.perf_counter()
    raw.encode(texts, batch_size=service.settings.batch_size, normalize_embeddings=True)
    raw_s = time.perf_counter() - start
    service.create_collection("throughput")
    docs = [Document(f"t{i}", c.text, {}) for i, c in enumerate(chunks)]
    start = time.perf_counter()
    report = service.ingest("throughput", docs)
    ingest_s = time.perf_counter() - start
    spec8 = service.create_collection("throughput_int8", embedding_precision="int8")
    service.embedder(spec8).encode(texts[:64])  # load and warm it outside the timing, like the others
    start = time.perf_counter()
    report8 = service.ingest("throughput_int8", docs)
    ingest8_s = time.perf_counter() - start
    return {
        "chunks": report.chunks_added,
        "ingest_chunks_per_s": round(report.chunks_added / ingest_s, 1),
        "raw_encode_chunks_per_s": round(len(texts) / raw_s, 1),
        "ingest_int8_chunks_per_s": round(report8.chunks_added / ingest8_s, 1),
    }


def int8_quality(
    service: RetrievalService,
    docs: list[Document],
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    eval_ids: list[str],
    tuned: dict[str, Any],
    bm25: Bm25Settings,
    dataset: Path,
) -> dict[str, dict[str, float]]:
    """The off-the-shelf modes again on the corpus embedded (documents and queries) by the int8 embedder."""
    spec = service.create_collection("corpus_int8", bm25=bm25, embedding_precision="int8")
    chunks = service.chunk_documents(spec, docs)
    service.ingest("corpus_int8", docs, vectors=encode_cached(service, spec, chunks, dataset))
    vectors = dict(zip(eval_ids, service.embedder(spec).encode([queries[q] for q in eval_ids]), strict=True))
    return {
        m: evaluate(service, "corpus_int8", queries, qrels, eval_ids, vectors, **mode_options(m, tuned))
        for m in ("dense", "hybrid_rrf", "hybrid_weighted")
    }


def scale_up(
    service: RetrievalService, chunks: list[Chunk], vectors: np.ndarray, n: int, seed: int = 0
) -> str:
    """A synthetic collection of ``n`` chunks: real chunks recombined (texts) and jittered (vectors)."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    spec = service.create_collection("scale")
    sentences = [s for c in chunks for s in c.text.split(". ") if len(s) > 20]
    out_chunks, out_vecs = [], np.empty((n, vectors.shape[1]), dtype=np.float32)
    for i in range(n):
        base = i % len(chunks)
        text = chunks[base].text if i < len(chunks) else ". ".join(rng.sample(sentences, 4))
        out_chunks.append(
            Chunk(
                id=str(__import__("uuid").UUID(int=i + 1)),
                document_id=f"s{i // 2}",
                index=i % 2,
                text=text,
                start=0,
                end=len(text),
                metadata={},
            )
        )
        v = (
            vectors[base]
            + (0 if i < len(chunks) else 0.15)
            * nrng.standard_normal(vectors.shape[1]).astype(np.float32)
            / math.sqrt(vectors.shape[1])
            * 4
        )
        out_vecs[i] = v / np.linalg.norm(v)
    with Progress(console=console) as bar:
        task = bar.add_task(f"writing {n} synthetic chunks", total=1)
        service.store.write(spec.name, out_chunks, out_vecs, [])
        bar.update(task, completed=1)
    return spec.name


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dataset", type=Path, default=DEFAULT_DATA, help="BEIR folder (corpus.jsonl, queries.jsonl)"
    )
    parser.add_argument(
        "--qrels", type=Path, default=None, help="qrels TSV (default DATASET/qrels/train.tsv)"
    )
    parser.add_argument(
        "--reranker", type=Path, default=None, help="a trained CrossEncoder directory to reuse"
    )
    parser.add_argument(
        "--embedder", type=Path, default=None, help="a domain-trained SentenceTransformer directory to reuse"
    )
    parser.add_argument(
        "--no-train", action="store_true", help="never train models (hybrid_rerank needs --reranker then)"
    )
    parser.add_argument(
        "--train-steps", type=int, default=-1, help="embedder/reranker training steps (-1 = their defaults)"
    )
    parser.add_argument(
        "--rerank-depth", type=int, default=30, help="fused candidates the cross-encoder rescores"
    )
    parser.add_argument(
        "--scale", type=int, default=100_000, help="chunks in the synthetic scale-up collection"
    )
    parser.add_argument("--latency-queries", type=int, default=100)
    parser.add_argument("--throughput-chunks", type=int, default=1000)
    args = parser.parse_args()
    args.qrels = args.qrels or args.dataset / "qrels" / "train.tsv"
    logging.basicConfig(level=logging.WARNING)

    docs, queries, qrels = load_beir(args.dataset, args.qrels)
    tune_ids, eval_ids = split(sorted(qrels))
    console.print(
        f"{len(docs)} documents, {len(qrels)} judged queries: {len(tune_ids)} tuning, {len(eval_ids)} evaluation"
    )
    models = ModelSettings()
    model_path = resolve_model("all-minilm-l6-v2", models)

    with tempfile.TemporaryDirectory(prefix="ragswap-bench-") as tmp:
        settings = RetrievalSettings(path=Path(tmp) / "store")
        service = RetrievalService(settings, models, Path(tmp))
        chunks = service.chunk_documents(service.create_collection("corpus"), docs)
        bm25, bm25_grid = tune_bm25(chunks, queries, qrels, tune_ids)
        console.print(f"BM25 tuned on the tuning half: k1={bm25.k1} b={bm25.b}")
        service.delete_collection("corpus")
        spec = service.create_collection("corpus", bm25=bm25)
        cache = encode_cached(service, spec, chunks, args.dataset)
        start = time.perf_counter()
        service.ingest("corpus", docs, vectors=cache)
        console.print(
            f"indexed {len(chunks)} chunks in {time.perf_counter() - start:.1f}s (vectors from cache)"
        )

        judged = sorted(qrels)
        QUERY_VECTORS.update(
            zip(judged, service.embedder(spec).encode([queries[q] for q in judged]), strict=True)
        )
        tuned, grid = tune_fusion(service, "corpus", queries, qrels, tune_ids)
        tuned.update(rerank_depth=args.rerank_depth, bm25=bm25.model_dump())
        grid = {**bm25_grid, **grid}
        console.print(f"tuned on the tuning half: {tuned}")
        rng = random.Random(1)
        lat_ids = rng.sample(eval_ids, min(args.latency_queries, len(eval_ids)))
        lat_texts = [queries[q] for q in lat_ids]
        lat_vecs = [QUERY_VECTORS[q] for q in lat_ids]
        quality: dict[str, dict[str, float]] = {}
        lat_5k: dict[str, dict[str, float]] = {}
        lat_100k: dict[str, dict[str, float]] = {}
        base_modes = [m for m in MODES if m != "hybrid_rerank"]
        for m in base_modes:
            quality[m] = evaluate(service, "corpus", queries, qrels, eval_ids, **mode_options(m, tuned))
            lat_5k[m] = latencies(service, "corpus", lat_texts, **mode_options(m, tuned))
            ONLY_5K[m] = latencies(service, "corpus", lat_texts, lat_vecs, **mode_options(m, tuned))
            console.print(f"{m}: {quality[m]} {lat_5k[m]}")

        INT8_QUALITY.update(int8_quality(service, docs, queries, qrels, eval_ids, tuned, bm25, args.dataset))
        console.print(f"int8 embedder: {INT8_QUALITY}")
        throughput: dict[str, float] = {}
        pipeline_info: dict[str, Any] = {"status": "pending (trained and measured last)"}
        report(
            args,
            docs,
            chunks,
            tune_ids,
            eval_ids,
            tuned,
            grid,
            pipeline_info,
            quality,
            lat_5k,
            lat_100k,
            throughput,
            len(lat_texts),
        )
        sample = random.Random(2).sample(chunks, min(args.throughput_chunks, len(chunks)))
        throughput = ingest_throughput(service, sample, model_path)
        console.print(f"throughput: {throughput}")
        report(
            args,
            docs,
            chunks,
            tune_ids,
            eval_ids,
            tuned,
            grid,
            pipeline_info,
            quality,
            lat_5k,
            lat_100k,
            throughput,
            len(lat_texts),
        )

        matrix = np.stack([cache[c.id] for c in chunks])
        scale_name = scale_up(service, chunks, matrix, args.scale)
        for m in base_modes:
            lat_100k[m] = latencies(service, scale_name, lat_texts, **mode_options(m, tuned))
            ONLY_100K[m] = latencies(service, scale_name, lat_texts, lat_vecs, **mode_options(m, tuned))
        report(
            args,
            docs,
            chunks,
            tune_ids,
            eval_ids,
            tuned,
            grid,
            pipeline_info,
            quality,
            lat_5k,
            lat_100k,
            throughput,
            len(lat_texts),
        )

        tuned_p, tuned_quality, pipeline_info = tuned_pipeline(
            args, service, docs, queries, qrels, tune_ids, eval_ids, bm25
        )
        quality.update(tuned_quality)
        if "hybrid_rerank" in quality:
            options = mode_options("hybrid_rerank", tuned_p)
            lat_5k["hybrid_rerank"] = latencies(
                service, pipeline_info["collection"], lat_texts[:20], **options
            )
            lat_100k["hybrid_rerank"] = latencies(service, scale_name, lat_texts[:20], **options)
        for m in ("dense_tuned", "hybrid_tuned"):
            if m in quality:
                lat_5k[m] = latencies(
                    service, pipeline_info["collection"], lat_texts, **mode_options(m, tuned_p)
                )
        report(
            args,
            docs,
            chunks,
            tune_ids,
            eval_ids,
            tuned,
            grid,
            pipeline_info,
            quality,
            lat_5k,
            lat_100k,
            throughput,
            len(lat_texts),
        )
        service.close()


def report(
    args: argparse.Namespace,
    docs: list[Document],
    chunks: list[Chunk],
    tune_ids: list[str],
    eval_ids: list[str],
    tuned: dict[str, Any],
    grid: dict[str, float],
    pipeline_info: dict[str, Any],
    quality: dict[str, dict[str, float]],
    lat_5k: dict[str, dict[str, float]],
    lat_100k: dict[str, dict[str, float]],
    throughput: dict[str, float],
    n_latency: int,
) -> None:
    modes = [m for m in [*MODES, "dense_tuned", "hybrid_tuned"] if m in quality]

    def vs_raw_encode(key: str) -> float | None:
        return round(throughput[key] / throughput["raw_encode_chunks_per_s"], 3) if throughput else None

    payload: dict[str, Any] = {
        "dataset": str(args.dataset),
        "qrels": str(args.qrels),
        "documents": len(docs),
        "chunks": len(chunks),
        "split": {
            "method": "sha1(query id)[0] % 2: even = tuning, odd = evaluation",
            "tuning_queries": len(tune_ids),
            "evaluation_queries": len(eval_ids),
            "reported_on": "evaluation half; everything learned or tuned used the tuning half only",
        },
        "modes": {
            "bm25/dense/hybrid_rrf/hybrid_weighted": "off-the-shelf all-MiniLM-L6-v2 + BM25, BM25 k1/b and "
            "fusion tuned on the tuning half",
            "dense_tuned/hybrid_tuned": "embedder fine-tuned on the tuning half's fit queries (training."
            "train_embedder); hybrid fusion chosen on its dev queries",
            "hybrid_rerank": "hybrid_tuned, then the cross-encoder trained on the fit queries (training."
            "train_reranker) rescores the top rerank_depth, blended with the fused score (weight chosen on dev)",
        },
        "tuned": tuned,
        "tuning_grid_ndcg@10": grid,
        "tuned_pipeline": pipeline_info,
        "ndcg@10": {m: quality[m]["ndcg@10"] for m in modes},
        "recall@100": {m: quality[m]["recall@100"] for m in modes},
        "mrr@10": {m: quality[m]["mrr@10"] for m in modes},
        "p50_ms_5k": {m: lat_5k[m]["p50"] for m in modes},
        "p95_ms_5k": {m: lat_5k[m]["p95"] for m in modes},
        "p50_ms_100k": {m: lat_100k[m]["p50"] for m in modes if m in lat_100k},
        "p95_ms_100k": {m: lat_100k[m]["p95"] for m in modes if m in lat_100k},
        "p50_ms_5k_search_only": {m: v["p50"] for m, v in ONLY_5K.items()},
        "p95_ms_5k_search_only": {m: v["p95"] for m, v in ONLY_5K.items()},
        "p50_ms_100k_search_only": {m: v["p50"] for m, v in ONLY_100K.items()},
        "p95_ms_100k_search_only": {m: v["p95"] for m, v in ONLY_100K.items()},
        "latency_note": "end to end per query (query embedding + search + fusion [+ cross-encoder over rerank_depth]), "
        f"{n_latency} evaluation queries (20 for hybrid_rerank), embedded store, one process; *_search_only: the same with the query embedding "
        "precomputed (index, fusion and payload lookup alone); 5k = the corpus; "
        f"100k = synthetic scale-up of {args.scale} chunks (real chunks recombined, vectors jittered)",
        "ingest_chunks_per_s": throughput.get("ingest_chunks_per_s"),
        "raw_encode_chunks_per_s": throughput.get("raw_encode_chunks_per_s"),
        "ingest_vs_raw_encode": vs_raw_encode("ingest_chunks_per_s"),
        "ingest_int8_chunks_per_s": throughput.get("ingest_int8_chunks_per_s"),
        "ingest_int8_vs_raw_encode": vs_raw_encode("ingest_int8_chunks_per_s"),
        "ndcg@10_int8": {m: v["ndcg@10"] for m, v in INT8_QUALITY.items()},
        "ndcg@10_int8_minus_float32": {
            m: round(v["ndcg@10"] - quality[m]["ndcg@10"], 4) for m, v in INT8_QUALITY.items()
        },
        "int8_note": "embedding_precision=int8: the same embedder with PyTorch dynamic int8 linear layers, "
        "documents and queries; quality on the evaluation half with the tuning half's BM25 and fusion",
        "throughput_note": f"the same {throughput.get('chunks')} corpus chunks: full ingest (chunk, encode, Qdrant write, "
        "index rebuild) vs SentenceTransformer.encode alone, same batch size, one after the other",
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "machine": machine(),
    }
    path = write_results("retrieval", payload)
    table = Table(
        "mode",
        "nDCG@10",
        "R@100",
        "MRR@10",
        "p50 5k ms",
        "p95 5k ms",
        "p50 100k ms",
        title="retrieval (evaluation half)",
    )
    for m in modes:
        table.add_row(
            m,
            f"{quality[m]['ndcg@10']:.4f}",
            f"{quality[m]['recall@100']:.4f}",
            f"{quality[m]['mrr@10']:.4f}",
            f"{lat_5k[m]['p50']:.1f}",
            f"{lat_5k[m]['p95']:.1f}",
            f"{lat_100k.get(m, {}).get('p50', float('nan')):.1f}",
        )
    console.print(table)
    console.print(
        f"ingest {payload['ingest_chunks_per_s']} chunks/s vs raw encode {payload['raw_encode_chunks_per_s']} "
        f"chunks/s = {payload['ingest_vs_raw_encode']}; int8 ingest {payload['ingest_int8_chunks_per_s']} "
        f"chunks/s = {payload['ingest_int8_vs_raw_encode']}; int8 nDCG@10 - float32: "
        f"{payload['ndcg@10_int8_minus_float32']}; wrote {path}"
    )


if __name__ == "__main__":
    main()
