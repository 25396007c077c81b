"""Retrieval benchmark on a BEIR dataset: untuned defaults, ``collections tune``, the trained pipeline (embedder,
reranker, tuned), latency through ``/v1/retrieve`` with a vLLM engine running beside the gateway, ingestion
throughput, and with ``--scale N`` a store bench of N chunks.

    python bench/retrieval.py                                   # SciFact  -> bench/results/retrieval.json
    python bench/retrieval.py --dataset ../shared/data/nfcorpus  # NFCorpus -> bench/results/retrieval_nfcorpus.json
    python bench/retrieval.py --scale 1000000                   # + the 1M-chunk store bench (same json)

Splits (reported figures never choose anything):

- A dataset with only ``qrels/train.tsv`` (SciFact): its judged queries are halved by sha1(query id): the even
  half tunes, the odd half is reported. Inside the tuning half, 80 % train the models ("fit") and 20 % choose
  their settings ("choose", second sha1 byte).
- A dataset with ``qrels/dev.tsv`` too (NFCorpus): train tunes and trains; dev is halved by sha1: the even half
  chooses, the odd half is reported.

Results write through ``bench/_common.py`` (commit, dirty flag, code hash); a run that stops early has written
everything measured until then.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench._common import SHARED_DATA, machine, percentile, write_results
from ragswap.model_store import ModelSettings, resolve_model
from retrieval import (
    BeirData,
    CollectionSpec,
    Document,
    RetrievalService,
    RetrievalSettings,
    SearchQuery,
    TuneOptions,
    load_beir,
    tune_collection,
)
from retrieval.beir import id_byte

CACHE = Path(os.environ.get("RAGSWAP_HOME", Path.home() / ".cache" / "ragswap")) / "bench"
console = Console()
logger = logging.getLogger("bench.retrieval")
MODES: dict[str, dict[str, Any]] = {
    "bm25": {"mode": "bm25"},
    "dense": {"mode": "dense"},
    "hybrid": {"mode": "hybrid"},
    "hybrid_rrf": {"mode": "hybrid", "fusion": "rrf"},
}
"""Untuned modes: the defaults (``hybrid`` = DBSF), and RRF (k=60) beside them for reference."""


# -- data -----------------------------------------------------------------------------------------------------
def splits(args: argparse.Namespace, data: BeirData, dev: BeirData | None) -> dict[str, list[str]]:
    if dev is None:
        judged = sorted(data.qrels)
        tune = [q for q in judged if id_byte(q, 0) % 2 == 0]
        return {
            "tune": tune,
            "fit": [q for q in tune if id_byte(q, 1) % 5 != 0],
            "choose": [q for q in tune if id_byte(q, 1) % 5 == 0],
            "eval": [q for q in judged if id_byte(q, 0) % 2 == 1],
        }
    held = sorted(dev.qrels)
    train = sorted(data.qrels)
    return {
        "tune": train,
        # a third of the training queries train the models (thousands of judgements otherwise: hours on CPU)
        "fit": [q for q in train if id_byte(q, 2) % 3 == 0],
        "choose": [q for q in held if id_byte(q, 0) % 2 == 0],
        "eval": [q for q in held if id_byte(q, 0) % 2 == 1],
    }


def cache_path(model_path: str, tag: str) -> Path:
    return CACHE / f"embeddings-{hashlib.sha1(f'{model_path}|{tag}'.encode()).hexdigest()[:16]}.npz"


def encode_cached(
    service: RetrievalService, spec: CollectionSpec, docs: list[Document], fingerprint: str
) -> dict[str, np.ndarray]:
    """Chunk vectors of ``spec``'s embedder, cached across runs (encoding a corpus takes minutes here)."""
    model_path = resolve_model(spec.embedding_model, ModelSettings())
    path = cache_path(
        model_path, f"{fingerprint}|{spec.chunking.model_dump_json()}|{spec.embedding_precision}"
    )
    cache: dict[str, np.ndarray] = {}
    if path.is_file():
        stored = np.load(path)
        cache = dict(zip(stored["ids"].tolist(), stored["vectors"], strict=True))
    chunks = service.chunk_documents(spec, docs)
    missing = [c for c in chunks if c.id not in cache]
    if missing:
        with Progress(console=console) as bar:
            task = bar.add_task(f"encoding {len(missing)} chunks (cached in {path})", total=len(missing))
            for s in range(0, len(missing), 1024):
                block = missing[s : s + 1024]
                cache.update(zip((c.id for c in block), service.encode_chunks(spec, block), strict=True))
                bar.update(task, completed=s + len(block))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, ids=np.array(list(cache)), vectors=np.stack(list(cache.values())))
        tmp.rename(path)
    return cache


# -- quality --------------------------------------------------------------------------------------------------
def quality(
    service: RetrievalService,
    collection: str,
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    qids: list[str],
    vectors: dict[str, np.ndarray] | None,
    **options: Any,
) -> dict[str, float]:
    """Mean nDCG@10, recall@100, MRR@10 (95 % bootstrap CI of nDCG@10) over ``qids``, one hit per document."""
    from eval import bootstrap_ci, rank_metrics

    rows = []
    for qid in qids:
        q = SearchQuery(
            collection=collection,
            query=queries[qid],
            top_k=100,
            group_by="document",
            vector=vectors.get(qid) if vectors is not None and options.get("mode") != "bm25" else None,
            **options,
        )
        rows.append(rank_metrics(service.rank_documents(q), qrels[qid]))
    out = {m: round(float(np.mean([r[m] for r in rows])), 4) for m in ("ndcg@10", "recall@100", "mrr@10")}
    low, high = bootstrap_ci([r["ndcg@10"] for r in rows])
    out["ndcg@10_ci95"] = [round(low, 4), round(high, 4)]  # type: ignore[assignment]
    return out


def latencies(
    service: RetrievalService,
    collection: str,
    texts: list[str],
    vectors: list[np.ndarray] | None,
    **options: Any,
) -> dict[str, float]:
    """p50/p95 ms of ``service.search`` per query (``vectors``: query embedding precomputed = search only)."""
    vecs: list[np.ndarray | None] = list(vectors) if vectors is not None else [None] * len(texts)
    for text, vec in zip(texts[:5], vecs[:5], strict=True):  # warm up
        service.search(SearchQuery(collection=collection, query=text, top_k=10, vector=vec, **options))
    times = []
    for text, vec in zip(texts, vecs, strict=True):
        start = time.perf_counter()
        service.search(SearchQuery(collection=collection, query=text, top_k=10, vector=vec, **options))
        times.append((time.perf_counter() - start) * 1000)
    return {"p50": round(percentile(times, 50), 2), "p95": round(percentile(times, 95), 2)}


# -- trained models -------------------------------------------------------------------------------------------
def trained_model(
    kind: str, args: argparse.Namespace, fit: list[str], choose: list[str], **options: Any
) -> tuple[str | None, dict[str, Any]]:
    """A reranker or embedder trained on ``fit`` (cached by data, its config and the trainer's code)."""
    import inspect

    from training import (
        EmbedderConfig,
        RerankerConfig,
        RetrieverManifest,
        train_embedder,
        train_reranker,
    )

    given = args.reranker if kind == "reranker" else args.embedder
    if given:
        return str(given), {"source": "given", "path": str(given)}
    config_type = RerankerConfig if kind == "reranker" else EmbedderConfig
    config = config_type.parse(
        {"train_query_ids": fit, "eval_query_ids": choose, "max_steps": args.train_steps, **options}
    )
    train: Callable[..., Any] = train_reranker if kind == "reranker" else train_embedder
    source = "".join(
        inspect.getsource(sys.modules[m]) for m in (train.__module__, RetrieverManifest.__module__)
    )
    key = hashlib.sha1(
        f"{kind}|{args.dataset.resolve()}|{config.model_dump_json()}|{source}".encode()
    ).hexdigest()[:12]
    out = CACHE / f"{kind}-{key}"
    if not (out / "config.json").is_file():
        if args.no_train:
            return None, {"source": "none (--no-train)"}
        console.print(f"training the {kind} on {len(fit)} queries -> {out}")
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        train(args.dataset, tmp, models=ModelSettings(), config=config, progress=True)
        tmp.rename(out)
    manifest = RetrieverManifest.read(out)
    return str(out), {
        "path": str(out),
        "train_queries": len(manifest.data.get("train_query_ids", [])),
        "held_apart_ndcg10_before": round(manifest.metrics["ndcg10_before"], 4),
        "held_apart_ndcg10_after": round(manifest.metrics["ndcg10_after"], 4),
        **(
            {"bm25_ndcg10": round(manifest.metrics["bm25_ndcg10"], 4)}
            if "bm25_ndcg10" in manifest.metrics
            else {}
        ),
        "steps": manifest.metrics.get("steps"),
        "train_seconds": manifest.metrics.get("wall_seconds"),
        "hyperparameters": manifest.hyperparameters,
    }


# -- latency through the gateway ------------------------------------------------------------------------------
@contextlib.contextmanager
def engine_beside(enabled: bool) -> Iterator[str | None]:
    """A real vLLM engine (the configured base model), idle, on this machine while the gateway is measured."""
    if not enabled:
        yield None
        return
    from bench.serving import free_port
    from serving.engine import EngineProcess, EngineSettings

    base = resolve_model("smollm2-135m-instruct", ModelSettings())
    proc = EngineProcess(EngineSettings(port=free_port()), base, "smollm2-135m-instruct")
    proc.start()
    try:
        proc.wait_ready()
        yield proc.url
    finally:
        proc.stop()


def gateway_latency(
    state: Path, settings: RetrievalSettings, collection: str, texts: list[str], engine_url: str | None
) -> dict[str, Any]:
    """p50/p95 ms of ``POST /v1/retrieve`` (hybrid, top 10) end to end: HTTP, query embedding, search."""
    import httpx

    from bench.serving import free_port
    from ragswap.config import Settings
    from serving.engine import EngineSettings
    from serving.server import BackgroundGateway
    from serving.settings import ServerSettings

    gw_settings = Settings(
        engine=EngineSettings(urls=[engine_url or "http://127.0.0.1:9"]),
        server=ServerSettings(port=free_port(), state_dir=state, api_keys=["sk-bench-0123456789"]),
        retrieval=settings,
    )
    gateway = BackgroundGateway(gw_settings)
    gateway.start()
    try:
        headers = {"Authorization": "Bearer sk-bench-0123456789"}
        with httpx.Client(base_url=gateway.url, headers=headers, timeout=60) as http:
            for text in texts[:5]:
                http.post("/v1/retrieve", json={"collection": collection, "query": text, "top_k": 10})
            times = []
            for text in texts:
                start = time.perf_counter()
                r = http.post("/v1/retrieve", json={"collection": collection, "query": text, "top_k": 10})
                times.append((time.perf_counter() - start) * 1000)
                r.raise_for_status()
    finally:
        gateway.stop()
    return {
        "p50": round(percentile(times, 50), 2),
        "p95": round(percentile(times, 95), 2),
        "engine_beside": engine_url is not None,
        "query_threads": settings.query_threads,
    }


# -- scale ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Write:
    """One write of the store bench: its chunks, its seconds (the optimizer run it triggered included), and that
    run's seconds (``None``: the write only appended)."""

    chunks: int
    seconds: float
    optimizer_s: float | None


class _OptimizerRuns(logging.Handler):
    """Collects the seconds of the store's ``optimized`` log records (``retrieval.store.edge``)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seconds: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "optimized":
            self.seconds.append(float(getattr(record, "seconds", 0.0)))


def _rate(writes: list[Write]) -> float:
    return sum(w.chunks for w in writes) / sum(w.seconds for w in writes)


def _append_seconds(writes: list[Write]) -> float:
    """Mean seconds of a write less its optimizer run."""
    return sum(w.seconds - (w.optimizer_s or 0.0) for w in writes) / len(writes)


def _cycles(writes: list[Write]) -> list[list[Write]]:
    """The writes cut into indexing cycles: appending writes up to and including one that ran the optimizer. The
    appends after the last run (not indexed yet) belong to no cycle."""
    cycles: list[list[Write]] = [[]]
    for w in writes:
        cycles[-1].append(w)
        if w.optimizer_s is not None:
            cycles.append([])
    return cycles[:-1]


def _window(writes: list[Write], share: float, *, last: bool) -> list[Write]:
    """The fewest whole indexing cycles at the start (or end) of the ingest holding ``share`` of its chunks, so that
    a window pays for the HNSW builds of just the points it wrote; the first (or last) ``share`` of the writes
    when no optimizer ran."""
    cycles = _cycles(writes)
    if not cycles:
        n = max(1, round(len(writes) * share))
        return writes[-n:] if last else writes[:n]
    target = share * sum(w.chunks for w in writes)
    taken: list[Write] = []
    for cycle in reversed(cycles) if last else cycles:
        taken.extend(cycle)
        if sum(w.chunks for w in taken) >= target:
            break
    return taken


def scale_bench(
    service: RetrievalService,
    spec: CollectionSpec,
    docs: list[Document],
    vectors: dict[str, np.ndarray],
    query_texts: list[str],
    query_vectors: list[np.ndarray],
    target_chunks: int,
    batch_chunks: int = 10_000,
) -> dict[str, Any]:
    """``target_chunks`` chunks written through the store layer in batches (sections of the real corpus, texts
    recombined and vectors perturbed), ingest rate per batch, then hybrid search latency and memory."""
    from retrieval import Bm25Encoder
    from retrieval.store import PointData
    from retrieval.types import Section

    rng = random.Random(0)
    nrng = np.random.default_rng(0)
    base = service.sections(spec, docs)
    spec = service.store.spec(spec.name)
    bm25 = Bm25Encoder(spec.bm25)
    sentences = [s for sec in base for s in sec.text.split(". ") if len(s) > 20]
    name = "scale"
    service.create_collection(name)
    service.store.save_spec(service.store.spec(name).model_copy(update={"bm25": spec.bm25}))
    timed: list[Write] = []
    runs = _OptimizerRuns()
    store_log = logging.getLogger("retrieval.store.edge")
    level, propagate = store_log.level, store_log.propagate
    store_log.addHandler(runs)
    store_log.setLevel(logging.INFO)
    store_log.propagate = False
    written = 0
    started = time.perf_counter()
    with Progress(console=console) as bar:
        task = bar.add_task(f"writing {target_chunks} synthetic chunks", total=target_chunks)
        n = 0
        while written < target_chunks:
            points: list[PointData] = []
            batch = 0
            while batch < batch_chunks and written + batch < target_chunks:
                src = base[n % len(base)]
                text = src.text if n < len(base) else ". ".join(rng.sample(sentences, 3 + len(src.chunks)))
                chunk_vectors = np.stack([vectors[c.id] for c in src.chunks])
                if n >= len(base):
                    chunk_vectors = chunk_vectors + 0.6 * nrng.standard_normal(chunk_vectors.shape).astype(
                        np.float32
                    ) / np.sqrt(chunk_vectors.shape[1])
                    chunk_vectors /= np.linalg.norm(chunk_vectors, axis=1, keepdims=True)
                doc_id = f"s{n}"
                section = Section(
                    id=str(__import__("uuid").UUID(int=n + 1)),
                    document_id=doc_id,
                    index=0,
                    text=text,
                    start=0,
                    end=len(text),
                    chunks=tuple(
                        c.__class__(f"{doc_id}-{i}", doc_id, i, text, 0, len(text), {})
                        for i, c in enumerate(src.chunks)
                    ),
                    metadata={},
                )
                points.append(
                    PointData(section, chunk_vectors.astype(np.float32), bm25.document(text), doc_id)
                )
                batch += len(src.chunks)
                n += 1
            t, before = time.perf_counter(), len(runs.seconds)
            service.store.write(name, points, [])
            timed.append(Write(batch, time.perf_counter() - t, sum(runs.seconds[before:]) or None))
            written += batch
            bar.update(task, completed=written)
    store_log.removeHandler(runs)
    store_log.setLevel(level)
    store_log.propagate = propagate
    ingest_s = time.perf_counter() - started
    tenth = max(1, len(timed) // 10)
    first, last = _rate(_window(timed, 0.1, last=False)), _rate(_window(timed, 0.1, last=True))
    fixed_first, fixed_last = _rate(timed[:tenth]), _rate(timed[-tenth:])
    optimizer = [w.optimizer_s for w in timed if w.optimizer_s is not None]
    k = max(1, len(optimizer) // 10)
    slowest = max(timed, key=lambda w: w.seconds)
    search_only = latencies(service, name, query_texts, query_vectors, mode="hybrid")
    e2e = latencies(service, name, query_texts, None, mode="hybrid")
    info = getattr(service.store, "info", lambda _: {})(name)
    disk = (
        sum(p.stat().st_size for p in (Path(service.settings.path or "") / name).rglob("*") if p.is_file())
        if service.settings.path
        else None
    )
    return {
        "chunks": written,
        "points": info.get("points"),
        "batches": len(timed),
        "batch_chunks": batch_chunks,
        "ingest_seconds": round(ingest_s, 1),
        "ingest_first_10pct_chunks_per_s": round(first, 1),
        "ingest_last_10pct_chunks_per_s": round(last, 1),
        "ingest_last_vs_first": round(last / first, 3),
        "ingest_windows": "the first and the last whole indexing cycles (writes up to and including one that ran "
        "Edge's optimizer) holding >= 10 % of the chunks each; a fixed window of 10 % of the writes holds a "
        "varying number of optimizer runs (see *_fixed_windows)",
        "ingest_first_10pct_chunks_per_s_fixed_windows": round(fixed_first, 1),
        "ingest_last_10pct_chunks_per_s_fixed_windows": round(fixed_last, 1),
        "ingest_last_vs_first_fixed_windows": round(fixed_last / fixed_first, 3),
        "ingest_chunks_per_s": round(written / sum(w.seconds for w in timed), 1),
        "optimizer_runs": len(optimizer),
        "optimizer_seconds_first_10pct": round(sum(optimizer[:k]) / k, 2) if optimizer else None,
        "optimizer_seconds_last_10pct": round(sum(optimizer[-k:]) / k, 2) if optimizer else None,
        "append_seconds_per_write_first_10pct": round(_append_seconds(timed[:tenth]), 3),
        "append_seconds_per_write_last_10pct": round(_append_seconds(timed[-tenth:]), 3),
        "slowest_write_s": round(slowest.seconds, 2),
        "p50_ms": e2e["p50"],
        "p95_ms": e2e["p95"],
        "p50_ms_search_only": search_only["p50"],
        "p95_ms_search_only": search_only["p95"],
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "disk_mb": round(disk / 2**20, 1) if disk else None,
        "segments": info.get("segments"),
        "indexed_vectors": info.get("indexed_vectors"),
        "note": "sections of the real corpus written through the store layer (ChunkStore.write) with precomputed "
        "vectors; past the corpus, texts are recombined sentences and vectors perturbed copies; a rate is the chunks "
        "of its writes over their seconds, the HNSW builds (Edge's optimizer) the writes trigger included; "
        "p50/p95 hybrid with the query embedding, *_search_only without",
    }


# -- main -----------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", type=Path, default=SHARED_DATA / "scifact", help="BEIR folder")
    parser.add_argument("--name", default=None, help="results name (default: retrieval, retrieval_<dataset>)")
    parser.add_argument(
        "--reranker", type=Path, default=None, help="a trained CrossEncoder directory to reuse"
    )
    parser.add_argument("--embedder", type=Path, default=None, help="a trained SentenceTransformer to reuse")
    parser.add_argument(
        "--no-train", action="store_true", help="never train (the trained pipeline is skipped)"
    )
    parser.add_argument(
        "--train-steps", type=int, default=-1, help="training steps (-1 = the trainers' defaults)"
    )
    parser.add_argument(
        "--reranker-loss",
        choices=["listwise", "bce"],
        default=None,
        help="the reranker's loss (default: the trainer's, listwise: hours on 2 cores; bce: ~15 min)",
    )
    parser.add_argument(
        "--no-engine", action="store_true", help="measure /v1/retrieve without a vLLM engine beside"
    )
    parser.add_argument(
        "--scale", type=int, default=0, help="chunks of the store bench (e.g. 1000000; 0 = skip)"
    )
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument("--throughput-chunks", type=int, default=1000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    name = args.name or ("retrieval" if args.dataset.name == "scifact" else f"retrieval_{args.dataset.name}")
    data = load_beir(args.dataset, "train")
    dev = load_beir(args.dataset, "dev") if (args.dataset / "qrels" / "dev.tsv").is_file() else None
    qrels = {**data.qrels, **(dev.qrels if dev else {})}
    split = splits(args, data, dev)
    docs = data.documents()
    payload: dict[str, Any] = {
        "dataset": str(args.dataset),
        "documents": len(docs),
        "split": {k: len(v) for k, v in split.items()}
        | {
            "method": "qrels/train.tsv halved by sha1(query id)[0] % 2 (even tunes, odd is reported; inside the "
            "tuning half sha1[1] % 5 == 0 chooses, the rest trains)"
            if dev is None
            else "qrels/train.tsv tunes (a third of it, sha1[2] % 3 == 0, trains the models); qrels/dev.tsv halved by "
            "sha1(query id)[0] % 2 (even chooses, odd is reported)",
            "reported_on": "eval",
        },
        "machine": machine(),
    }
    console.print(f"{len(docs)} documents; queries: {payload['split']}")

    def report() -> None:
        payload["bench_seconds"] = round(time.perf_counter() - started, 1)
        payload["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        path = write_results(name, payload)
        print_table(payload, path)

    with tempfile.TemporaryDirectory(prefix="ragswap-bench-") as tmp:
        settings = RetrievalSettings(path=Path(tmp) / "collections")
        service = RetrievalService(settings, ModelSettings(), Path(tmp))
        from retrieval.store.edge import engine_version

        payload["engine"] = {"backend": "embedded (Qdrant Edge)", "version": engine_version()}
        spec = service.create_collection("corpus")
        vectors = encode_cached(service, spec, docs, data.fingerprint)
        start = time.perf_counter()
        report_ = service.ingest("corpus", docs, vectors=vectors)
        payload["index_seconds_cached_vectors"] = round(time.perf_counter() - start, 2)
        spec = service.store.spec("corpus")
        payload["chunks"] = report_.chunks_added
        payload["sections"] = len(service.sections(spec, docs))
        payload["defaults"] = {
            "chunking": spec.chunking.model_dump(),
            "bm25": spec.bm25.model_dump(),
            "search": service.settings.search.model_dump(),
        }
        judged = sorted(qrels)
        qvec = dict(
            zip(judged, service.embedder(spec).encode([data.queries[q] for q in judged]), strict=True)
        )
        payload["defaults_ndcg@10"] = {}
        payload["quality_defaults"] = {}
        for mode, options in MODES.items():
            payload["quality_defaults"][mode] = quality(
                service, "corpus", data.queries, qrels, split["eval"], qvec, **options
            )
            payload["defaults_ndcg@10"][mode] = payload["quality_defaults"][mode]["ndcg@10"]
            console.print(f"defaults {mode}: {payload['quality_defaults'][mode]}")
        report()

        # collections tune on the tuning queries (the eval queries choose nothing)
        tune_ids = split["tune"]
        with Progress(console=console) as bar:
            tasks: dict[str, Any] = {}

            def progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(f"tune: {stage}", total=total or None)
                bar.update(tasks[stage], completed=done, total=total or None)

            tuned = tune_collection(
                service,
                "corpus",
                {q: data.queries[q] for q in tune_ids},
                {q: qrels[q] for q in tune_ids},
                TuneOptions(held_out=0.3),
                progress,
            )
        payload["tune_report"] = tuned.model_dump(exclude={"grid"})
        payload["tune_grid"] = tuned.grid
        payload["quality_tuned"] = {
            "hybrid": quality(service, "corpus", data.queries, qrels, split["eval"], qvec)
        }
        payload["tuned_ndcg@10"] = {"hybrid": payload["quality_tuned"]["hybrid"]["ndcg@10"]}
        console.print(f"tuned: {tuned.chosen} -> {payload['quality_tuned']}")
        report()

        # latency: search only and in process, then end to end through the gateway with an engine beside it
        rng = random.Random(1)
        lat_ids = rng.sample(split["eval"], min(args.latency_queries, len(split["eval"])))
        texts = [data.queries[q] for q in lat_ids]
        payload["latency_ms_5k_search_only"] = {
            m: latencies(service, "corpus", texts, [qvec[q] for q in lat_ids], **o) for m, o in MODES.items()
        }
        payload["latency_ms_5k_in_process"] = {
            m: latencies(service, "corpus", texts, None, **o) for m, o in MODES.items()
        }
        payload["throughput"] = throughput(service, docs, args.throughput_chunks)
        report()
        service.close()  # the gateway opens the same store
        with engine_beside(not args.no_engine) as engine_url:
            e2e = gateway_latency(Path(tmp), settings, "corpus", texts, engine_url)
            payload["p50_ms_e2e_5k"], payload["p95_ms_e2e_5k"] = e2e["p50"], e2e["p95"]
            payload["e2e_5k"] = e2e
            more_threads = settings.model_copy(update={"query_threads": 0})
            payload["e2e_5k_query_threads_default"] = gateway_latency(
                Path(tmp), more_threads, "corpus", texts, engine_url
            )
        report()
        service = RetrievalService(settings, ModelSettings(), Path(tmp))

        if not args.no_train or args.embedder or args.reranker:
            trained_pipeline(args, service, data, qrels, split, payload)
            report()
        if args.scale:
            spec = service.store.spec("corpus")
            payload["scale"] = scale_bench(
                service, spec, docs, vectors, texts[:100], [qvec[q] for q in lat_ids[:100]], args.scale
            )
            report()
        service.close()
    report()


def trained_pipeline(
    args: argparse.Namespace,
    service: RetrievalService,
    data: BeirData,
    qrels: dict[str, dict[str, int]],
    split: dict[str, list[str]],
    payload: dict[str, Any],
) -> None:
    """Embedder and reranker trained on ``fit``, the collection tuned on ``choose``, reported on ``eval``."""
    embedder, embedder_info = trained_model("embedder", args, split["fit"], split["choose"])
    # The cross-encoder starts from the trained embedder: it already knows the domain's vocabulary.
    reranker, reranker_info = trained_model(
        "reranker",
        args,
        split["fit"],
        split["choose"],
        **({"base_model": embedder} if embedder else {}),
        **({"loss": args.reranker_loss} if args.reranker_loss else {}),
    )
    payload["trained_pipeline"] = {"embedder": embedder_info, "reranker": reranker_info}
    if embedder is None:
        return
    docs = data.documents()
    spec = service.create_collection("trained", embedding_model=embedder)
    service.ingest("trained", docs, vectors=encode_cached(service, spec, docs, data.fingerprint))
    judged = sorted(qrels)
    qvec = dict(zip(judged, service.embedder(spec).encode([data.queries[q] for q in judged]), strict=True))
    quality_trained: dict[str, Any] = {}
    quality_trained["dense_trained"] = quality(
        service, "trained", data.queries, qrels, split["eval"], qvec, mode="dense"
    )
    quality_trained["hybrid_trained"] = quality(
        service, "trained", data.queries, qrels, split["eval"], qvec, mode="hybrid", rerank=False
    )
    if reranker is not None:
        service.settings = service.settings.model_copy(update={"reranker": reranker})
    choose = split["choose"]
    tuned = tune_collection(
        service,
        "trained",
        {q: data.queries[q] for q in choose},
        {q: qrels[q] for q in choose},
        TuneOptions(held_out=0.3, min_tuning=20, min_held_out=10),
    )
    payload["trained_pipeline"]["tune_report"] = tuned.model_dump(exclude={"grid"})
    quality_trained["hybrid_trained_tuned"] = quality(
        service, "trained", data.queries, qrels, split["eval"], qvec, rerank=False
    )
    if reranker is not None:
        quality_trained["hybrid_rerank"] = quality(
            service, "trained", data.queries, qrels, split["eval"], qvec
        )
        rng = random.Random(1)
        ids = rng.sample(split["eval"], min(30, len(split["eval"])))
        payload["latency_ms_5k_rerank"] = latencies(service, "trained", [data.queries[q] for q in ids], None)
    payload["quality_trained"] = quality_trained
    payload["tuned_ndcg@10"].update({m: v["ndcg@10"] for m, v in quality_trained.items()})
    console.print(f"trained pipeline: {quality_trained}")


def throughput(service: RetrievalService, docs: list[Document], n_chunks: int) -> dict[str, float]:
    """The same chunks, side by side: the full ingest path (chunk, encode, Edge write) vs ``encode`` alone."""
    from sentence_transformers import SentenceTransformer

    spec = service.create_collection("throughput")
    chunks = random.Random(2).sample(service.chunk_documents(spec, docs), n_chunks)
    texts = [c.text for c in chunks]
    raw = SentenceTransformer(resolve_model(spec.embedding_model, ModelSettings()), device="cpu")
    raw.encode(texts[:64], batch_size=64)
    start = time.perf_counter()
    raw.encode(texts, batch_size=service.settings.batch_size, normalize_embeddings=True)
    raw_s = time.perf_counter() - start
    start = time.perf_counter()
    report = service.ingest("throughput", [Document(f"t{i}", t) for i, t in enumerate(texts)])
    ingest_s = time.perf_counter() - start
    service.delete_collection("throughput")
    return {
        "chunks": report.chunks_added,
        "ingest_chunks_per_s": round(report.chunks_added / ingest_s, 1),
        "raw_encode_chunks_per_s": round(len(texts) / raw_s, 1),
        "ingest_vs_raw_encode": round((report.chunks_added / ingest_s) / (len(texts) / raw_s), 3),
    }


def print_table(payload: dict[str, Any], path: Path) -> None:
    table = Table(
        "mode", "nDCG@10", "R@100", "MRR@10", "95% CI nDCG", title=f"{payload['dataset']} (reported queries)"
    )
    rows = {**{f"{m} (defaults)": v for m, v in payload.get("quality_defaults", {}).items()}}
    rows.update({f"{m} (tuned)": v for m, v in payload.get("quality_tuned", {}).items()})
    rows.update(payload.get("quality_trained", {}))
    for m, v in rows.items():
        ci = v.get("ndcg@10_ci95", ["", ""])
        table.add_row(
            m, f"{v['ndcg@10']:.4f}", f"{v['recall@100']:.4f}", f"{v['mrr@10']:.4f}", f"[{ci[0]}, {ci[1]}]"
        )
    console.print(table)
    lat = {k: payload[k] for k in ("p50_ms_e2e_5k", "p95_ms_e2e_5k") if k in payload}
    if lat:
        console.print(f"/v1/retrieve hybrid end to end: {lat}")
    if "scale" in payload:
        s = payload["scale"]
        console.print(
            f"scale: {s['chunks']} chunks, ingest last/first {s['ingest_last_vs_first']} (whole indexing cycles; "
            f"fixed windows {s.get('ingest_last_vs_first_fixed_windows')}), p50 {s['p50_ms']} ms "
            f"(search only {s['p50_ms_search_only']}), rss {s['rss_mb']} MB"
        )
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
