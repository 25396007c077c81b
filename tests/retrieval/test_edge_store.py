"""The Qdrant Edge behaviours the embedded store relies on (Edge is beta: pin them), and its guarantees: one
process at a time, durability across a kill, whole documents after a crash between two engine updates, and
searches that never see half of a document while it is written."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ragswap.model_store import ModelSettings
from retrieval import (
    ChunkingSettings,
    Document,
    EmbeddedSettings,
    Hit,
    RetrievalService,
    RetrievalSettings,
    SearchQuery,
    StoreBusyError,
)

REPO = Path(__file__).resolve().parents[2]
SMALL_SECTIONS = ChunkingSettings(chunk_size=32, chunk_overlap=4, section_tokens=64)
"""Documents of a few hundred tokens become several sections: a document's write spans several points."""


def long_docs(n: int, version: int = 1, prefix: str = "doc") -> list[Document]:
    """``n`` documents of several sections each; every sentence carries the version, so each section does."""
    return [
        Document(
            f"{prefix}{i}",
            "\n\n".join(
                f"Part {p} of record {prefix}{i} in revision v{version}: the lighthouse keeper logged the tides, "
                f"the wind from the west and a ship passing at dawn, revision v{version}."
                for p in range(4)
            ),
            {"n": i},
        )
        for i in range(n)
    ]


def run_child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


CHILD_PRELUDE = """
import os, signal, sys
from pathlib import Path
from ragswap.model_store import ModelSettings
from retrieval import RetrievalService, RetrievalSettings
from retrieval.store import edge
from tests.retrieval.test_edge_store import SMALL_SECTIONS, long_docs

root = Path(sys.argv[1])
service = RetrievalService(RetrievalSettings(path=root, chunking=SMALL_SECTIONS), ModelSettings(), root)
"""


def test_a_second_process_fails_at_once_and_says_what_to_do(tmp_path: Path) -> None:
    root = tmp_path / "store"
    holder = RetrievalService(RetrievalSettings(path=root), ModelSettings(), tmp_path)
    try:
        child = run_child(CHILD_PRELUDE, str(root))
        assert child.returncode != 0
        assert "StoreBusyError" in child.stderr and str(root) in child.stderr
        assert "use the Qdrant server backend (retrieval.url)" in child.stderr
        with pytest.raises(StoreBusyError):
            RetrievalService(
                RetrievalSettings(path=root), ModelSettings(), tmp_path
            )  # another thread, same lock
    finally:
        holder.close()
    RetrievalService(RetrievalSettings(path=root), ModelSettings(), tmp_path).close()  # free again


def test_cli_commands_refuse_a_store_held_by_another_process(tmp_path: Path) -> None:
    state = tmp_path / "state"
    holder = RetrievalService(RetrievalSettings(), ModelSettings(), state)
    try:
        env = {**os.environ, "PYTHONPATH": str(REPO), "RAGSWAP_SERVER__STATE_DIR": str(state)}
        cli = subprocess.run(
            [sys.executable, "-c", "from ragswap.cli import main; main()", "collections", "list"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert cli.returncode == 1
        out = " ".join(cli.stdout.split())
        assert str(state / "collections") in out and "retrieval.url" in out
    finally:
        holder.close()


def test_gateway_does_not_start_on_a_store_held_by_another_process(tmp_path: Path) -> None:
    """``ragswap serve`` exits non-zero, naming the directory and the way out, instead of serving without
    retrieval (no engine is needed: startup stops before anything is served)."""
    from tests.conftest import free_port

    state = tmp_path / "state"
    holder = RetrievalService(RetrievalSettings(), ModelSettings(), state)
    try:
        env = {**os.environ, "PYTHONPATH": str(REPO), "RAGSWAP_SERVER__STATE_DIR": str(state)}
        serve = subprocess.run(
            [
                sys.executable,
                "-c",
                "from ragswap.cli import main; main()",
                "serve",
                "--engine-url",
                "http://127.0.0.1:9",
                "--port",
                str(free_port()),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
            check=False,
        )
    finally:
        holder.close()
    assert serve.returncode != 0
    out = " ".join(serve.stdout.split())
    assert str(state / "collections") in out
    assert "use the Qdrant server backend (retrieval.url) to share collections between processes" in out


def test_killed_writer_loses_nothing_acknowledged_and_leaves_whole_documents(tmp_path: Path) -> None:
    """The child acknowledges one ingest, then is killed (SIGKILL) between two engine updates of the next one."""
    root = tmp_path / "store"
    child = run_child(
        CHILD_PRELUDE
        + """
service.create_collection("kb")
service.ingest("kb", long_docs(8, prefix="acked"))
print("acknowledged", flush=True)
batches = edge.document_batches
def crash_after_two(points, size=4):
    for i, batch in enumerate(batches(points, size)):
        if i == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        yield batch
edge.document_batches = crash_after_two
service.ingest("kb", long_docs(12, prefix="late"))
print("not reached", flush=True)
""",
        str(root),
    )
    assert child.returncode == -9 and "acknowledged" in child.stdout and "not reached" not in child.stdout
    service = RetrievalService(
        RetrievalSettings(path=root, chunking=SMALL_SECTIONS), ModelSettings(), tmp_path
    )
    try:
        spec = service.store.spec("kb")
        docs = long_docs(8, prefix="acked") + long_docs(12, prefix="late")
        expected = {d.id: {s.id for s in service.sections(spec, [d])} for d in docs}
        stored = service.store.sections_of("kb", list(expected))
        for doc, sections in expected.items():
            got = {s.id for s in stored[doc]}
            assert got in (sections, set()), doc  # whole or absent
            if doc.startswith("acked"):
                assert got == sections, doc  # acknowledged: durable
        late = [d for d in stored if d.startswith("late") and stored[d]]
        assert 0 < len(late) < 12  # the kill really fell between two updates of one write
        assert service.describe("kb").documents == 8 + len(late)
    finally:
        service.close()


def test_killed_replacement_is_finished_on_reopening(tmp_path: Path) -> None:
    """Killed after the new versions are written and before the old ones are removed: reopening removes them."""
    root = tmp_path / "store"
    child = run_child(
        CHILD_PRELUDE
        + """
service.create_collection("kb")
service.ingest("kb", long_docs(6, version=1))
commit = edge._Collection.write_commit
def crash_when_removing(self, seq, removing=None):
    if removing:
        os.kill(os.getpid(), signal.SIGKILL)
    commit(self, seq, removing)
edge._Collection.write_commit = crash_when_removing
service.ingest("kb", long_docs(6, version=2))
""",
        str(root),
    )
    assert child.returncode == -9, child.stderr
    service = RetrievalService(
        RetrievalSettings(path=root, chunking=SMALL_SECTIONS), ModelSettings(), tmp_path
    )
    try:
        spec = service.store.spec("kb")
        new = {d.id: {s.id for s in service.sections(spec, [d])} for d in long_docs(6, version=2)}
        stored = service.store.sections_of("kb", list(new))
        assert {d: {s.id for s in stored[d]} for d in new} == new  # only the new versions, whole
        hits = service.search(
            SearchQuery(collection="kb", query="lighthouse keeper", top_k=100, group_by="section")
        )
        assert hits and all("revision v2" in h.chunk.text for h in hits)
    finally:
        service.close()


def sections_seen(hits: list[Hit]) -> dict[tuple[str, int], int]:
    """Sections found, by (document, revision)."""
    seen: dict[tuple[str, int], int] = {}
    for h in hits:
        version = int(h.chunk.text.split("revision v")[1].split(":")[0].split(",")[0].rstrip("."))
        seen[h.chunk.document_id, version] = seen.get((h.chunk.document_id, version), 0) + 1
    return seen


def test_concurrent_ingest_and_search_never_show_half_a_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worst case: every engine update carries one section (a document's sections land in separate updates)
    and writes pause between updates, so that searches land inside them. Searches must still see every version
    of a document whole: the store hides a write until it completes (without that, this test fails)."""
    from retrieval.store import edge

    def one_by_one(points: list[object], size: int = 1) -> Iterator[list[object]]:
        for point in points:
            yield [point]
            time.sleep(0.01)

    monkeypatch.setattr(edge, "document_batches", one_by_one)
    service = RetrievalService(
        RetrievalSettings(path=tmp_path / "store", chunking=SMALL_SECTIONS), ModelSettings(), tmp_path
    )
    try:
        spec = service.create_collection("kb")
        per_version = {
            v: {d.id: len(service.sections(spec, [d])) for d in long_docs(6, version=v)} for v in range(1, 9)
        }
        service.ingest("kb", long_docs(6, version=1))
        errors: list[BaseException] = []
        stop = threading.Event()
        searches = [0]

        def writer() -> None:
            try:
                for v in range(2, 9):
                    service.ingest("kb", long_docs(6, version=v))
            except BaseException as exc:
                errors.append(exc)
            finally:
                stop.set()

        def reader() -> None:
            vector = service.embed_query(spec, "lighthouse keeper tides")
            try:
                while not stop.is_set():
                    hits = service.search(
                        SearchQuery(
                            collection="kb",
                            query="x",
                            mode="dense",
                            top_k=1000,
                            group_by="section",
                            vector=vector,
                        )
                    )
                    seen = sections_seen(hits)
                    for (doc, version), count in seen.items():
                        # Every section of a version is seen, or none: never half a document.
                        assert count == per_version[version][doc], (doc, version, count)
                    assert {doc for doc, _ in seen} == set(per_version[1])
                    searches[0] += 1
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=240)
        assert not errors, errors[0]
        assert searches[0] > 20
    finally:
        service.close()


@pytest.mark.parametrize("engine_runs_it", ["while_written", "after_written"])
def test_a_search_overlapping_a_write_is_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine_runs_it: str
) -> None:
    """The race above, made certain: a search's filter is built in one phase of a write and the engine runs it in
    another. ``while_written``: built before the write began, run after its first update (the new revision half
    in). ``after_written``: built while the write was in flight, run once it finished (the old revision deleted,
    the new one still hidden by the filter). Either way the store must see the change and run the search again."""
    from retrieval.store import edge

    service = RetrievalService(
        RetrievalSettings(path=tmp_path / "store", chunking=SMALL_SECTIONS), ModelSettings(), tmp_path
    )
    try:
        spec = service.create_collection("kb")
        service.ingest("kb", long_docs(2, version=1))
        whole = {v: {d.id: len(service.sections(spec, [d])) for d in long_docs(2, version=v)} for v in (1, 2)}
        first_update, resume = threading.Event(), threading.Event()

        def pausing(points: list[object], size: int = 1) -> Iterator[list[object]]:
            for i, point in enumerate(points):
                yield [point]
                if i == 0:
                    first_update.set()
                    assert resume.wait(60)

        monkeypatch.setattr(edge, "document_batches", pausing)
        writer = threading.Thread(target=service.ingest, args=("kb", long_docs(2, version=2)))
        original = edge.EdgeStore._query
        runs: list[object] = []

        def query(self: object, col: object, q: object, flt: object) -> object:
            runs.append(flt)
            if len(runs) == 1 and engine_runs_it == "while_written":
                writer.start()
                assert first_update.wait(60)
            elif len(runs) == 1:
                resume.set()
                writer.join(60)
            return original(self, col, q, flt)  # type: ignore[arg-type]

        monkeypatch.setattr(edge.EdgeStore, "_query", query)
        if engine_runs_it == "after_written":
            writer.start()
            assert first_update.wait(60)
        vector = service.embed_query(spec, "lighthouse keeper tides")
        hits = service.search(
            SearchQuery(
                collection="kb", query="x", mode="dense", top_k=1000, group_by="section", vector=vector
            )
        )
        resume.set()
        writer.join(60)
        seen = sections_seen(hits)
        expected = 1 if engine_runs_it == "while_written" else 2
        assert seen == {(doc, expected): n for doc, n in whole[expected].items()}
        assert len(runs) == 2
    finally:
        service.close()


def test_a_write_that_fails_in_the_engine_leaves_the_collection_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An engine update failing after others went in: the points already written are removed again, the old
    revision stays whole, and the next write goes through."""
    from retrieval.store import edge

    service = RetrievalService(
        RetrievalSettings(path=tmp_path / "store", chunking=SMALL_SECTIONS), ModelSettings(), tmp_path
    )
    try:
        spec = service.create_collection("kb")
        service.ingest("kb", long_docs(3, version=1))
        before = service.store.counts("kb")
        whole = {v: {d.id: len(service.sections(spec, [d])) for d in long_docs(3, version=v)} for v in (1, 2)}
        batches = edge.document_batches

        def failing(points: list[object], size: int = 1) -> Iterator[list[object]]:
            yield from list(batches(points, 1))[:2]
            raise OSError("disk full")

        monkeypatch.setattr(edge, "document_batches", failing)
        with pytest.raises(OSError, match="disk full"):
            service.ingest("kb", long_docs(3, version=2))
        vector = service.embed_query(spec, "lighthouse keeper tides")
        query = SearchQuery(
            collection="kb", query="x", mode="dense", top_k=1000, group_by="section", vector=vector
        )
        assert sections_seen(service.search(query)) == {(d, 1): n for d, n in whole[1].items()}
        assert service.store.counts("kb") == before
        monkeypatch.setattr(edge, "document_batches", batches)
        service.ingest("kb", long_docs(3, version=2))
        assert sections_seen(service.search(query)) == {(d, 2): n for d, n in whole[2].items()}
    finally:
        service.close()


def test_an_ingest_past_the_index_threshold_builds_the_hnsw_index_counting_across_restarts(
    tmp_path: Path,
) -> None:
    """Points written since the last optimizer run are counted in the commit record, so two ingests in two
    processes that together cross ``embedded.index_threshold`` index the collection. (Edge's own
    ``indexed_vectors_count`` counts the BM25 vectors, indexed as they are written: before any HNSW graph it
    equals the point count; with the dense graph it is twice that. Relied on here, not in the store.)"""
    settings = RetrievalSettings(
        path=tmp_path / "store", chunking=SMALL_SECTIONS, embedded=EmbeddedSettings(index_threshold=150)
    )
    service = RetrievalService(settings, ModelSettings(), tmp_path)
    try:
        service.create_collection("kb")
        service.ingest("kb", long_docs(30, prefix="first"))
        info = service.store.info("kb")
        assert 75 <= info["points"] < 150 and info["indexed_vectors"] == info["points"]  # no graph yet
    finally:
        service.close()
    service = RetrievalService(settings, ModelSettings(), tmp_path)
    try:
        service.ingest("kb", long_docs(30, prefix="second"))
        info = service.store.info("kb")
        assert info["points"] >= 150 and info["indexed_vectors"] == 2 * info["points"]  # dense HNSW built
        hits = service.search(
            SearchQuery(collection="kb", query="record second7 in revision v1", mode="dense", top_k=50)
        )
        assert {h.chunk.document_id for h in hits} >= {"first7", "second7"}
        indexed = service.store.info("kb")
        service.ingest("kb", long_docs(5, prefix="third"))  # below the threshold again: scanned, not indexed
        after = service.store.info("kb")
        assert after["indexed_vectors"] == indexed["indexed_vectors"] + after["points"] - indexed["points"]
    finally:
        service.close()


def test_edge_bool_match_needs_numpy_bools() -> None:
    """Pins a Qdrant Edge 0.9 behaviour the filter code works around: ``MatchValue(True)`` turns the Python bool
    into the integer 1 and matches no boolean payload; ``numpy.bool_`` reaches the engine as a boolean. If this
    test fails, Edge fixed it and ``MetadataFilter.build``'s ``boolean=np.bool_`` can go."""
    import tempfile

    from qdrant_edge import (
        CountRequest,
        Distance,
        EdgeConfig,
        EdgeShard,
        EdgeVectorParams,
        FieldCondition,
        Filter,
        MatchValue,
        Point,
        UpdateOperation,
    )

    with tempfile.TemporaryDirectory() as tmp:
        shard = EdgeShard.create(
            tmp, EdgeConfig(vectors={"v": EdgeVectorParams(size=2, distance=Distance.Dot)})
        )
        shard.update(UpdateOperation.upsert_points([Point(1, {"v": [1.0, 0.0]}, {"flag": True})]))

        def count(value: object) -> int:
            flt = Filter(must=[FieldCondition(key="flag", match=MatchValue(value=value))])  # type: ignore[arg-type]
            return int(shard.count(CountRequest(exact=True, filter=flt)))

        assert count(True) == 0 and count(np.bool_(True)) == 1
        shard.close()
