"""Ingestion: loaders, chunkers, idempotency, updates, deletes, persistence and failure atomicity."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ragswap.model_store import ModelSettings
from retrieval import BeirData
from retrieval.chunking import Chunker, TokenMeter
from retrieval.errors import InvalidDocumentError, UnsupportedFormatError
from retrieval.loaders import load_bytes
from retrieval.models import load_embedder
from retrieval.search import SearchQuery
from retrieval.service import RetrievalService
from retrieval.settings import ChunkingSettings, RetrievalSettings
from retrieval.types import Document

MARKDOWN = """# Penguins

Emperor penguins breed during the Antarctic winter. The male incubates the single egg on his feet for about
two months while the female feeds at sea.

## Diet

Penguins eat krill, squid and fish. Adélie penguins depend mostly on Antarctic krill.

# Volcanoes

Mount Erebus is the southernmost active volcano on Earth and has a persistent lava lake.
"""


def make_pdf(text_lines: list[str]) -> bytes:
    """A real one-page PDF with embedded text, written by matplotlib's PDF backend."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.5, 11))
    for i, line in enumerate(text_lines):
        fig.text(0.05, 0.95 - i * 0.04, line, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="pdf")
    return buf.getvalue()


def test_loaders_read_every_format() -> None:
    md = load_bytes(MARKDOWN.encode(), "notes.md")
    assert md[0].id == "notes.md" and md[0].text.startswith("# Penguins")
    html = load_bytes(
        b"<html><head><title>Moon</title><script>var x=1;</script></head><body><h1>Moon</h1>"
        b"<p>The Moon has no atmosphere.</p></body></html>",
        "moon.html",
    )
    assert (
        "no atmosphere" in html[0].text
        and "var x" not in html[0].text
        and html[0].metadata["title"] == "Moon"
    )
    pdf = load_bytes(make_pdf(["The thermosphere is hotter than the stratosphere."]), "air.pdf")
    assert "thermosphere is hotter" in pdf[0].text
    beir = load_bytes(
        b'{"_id": "7", "title": "T", "text": "Body text."}\n{"_id": "8", "text": "More."}\n', "c.jsonl"
    )
    assert [d.id for d in beir] == ["7", "8"] and beir[0].text == "T\n\nBody text."


@pytest.mark.parametrize(
    ("data", "name", "error"),
    [
        (b"", "empty.txt", InvalidDocumentError),
        (b"   \n ", "blank.md", InvalidDocumentError),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image.txt", InvalidDocumentError),
        (b"%PDF-1.4 garbage", "broken.pdf", InvalidDocumentError),
        (b"hello", "photo.png", UnsupportedFormatError),
        (b"{not json}\n", "bad.jsonl", InvalidDocumentError),
    ],
)
def test_loaders_reject_bad_input(data: bytes, name: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        load_bytes(data, name)


@pytest.mark.parametrize("chunker", ["fixed", "recursive", "semantic"])
def test_chunkers_respect_the_embedder_limit_and_keep_offsets(chunker: str, corpus: BeirData) -> None:
    embedder = load_embedder("all-minilm-l6-v2", ModelSettings())
    meter = TokenMeter(embedder.tokenizer)
    settings = ChunkingSettings(chunker=chunker, chunk_size=4096, chunk_overlap=16)  # type: ignore[arg-type]
    c = Chunker(settings, meter, embedder.max_tokens, embed=embedder.encode)
    assert c.size == 254  # MiniLM reads 256 tokens, two of them special
    long_doc = Document("long", "\n\n".join(d.text for d in corpus.documents()[:12]))
    chunks = c.chunk(long_doc)
    assert len(chunks) >= 3
    for ch in chunks:
        assert meter.count(ch.text) <= 254
        assert long_doc.text[ch.start : ch.end] == ch.text
    assert len({ch.id for ch in chunks}) == len(chunks)
    if chunker == "fixed":
        assert chunks[1].start < chunks[0].end  # windows overlap


def test_recursive_chunker_splits_on_headings() -> None:
    embedder = load_embedder("all-minilm-l6-v2", ModelSettings())
    c = Chunker(
        ChunkingSettings(chunk_size=40, chunk_overlap=8), TokenMeter(embedder.tokenizer), embedder.max_tokens
    )
    chunks = c.chunk(Document("md", MARKDOWN))
    assert any(ch.text.startswith("# Volcanoes") for ch in chunks)
    assert not any("krill" in ch.text and "Erebus" in ch.text for ch in chunks)


def test_ingest_is_idempotent_updates_and_deletes(service: RetrievalService) -> None:
    service.create_collection("lifecycle")
    docs = [
        Document("penguins", MARKDOWN, {"source": "notes.md"}),
        Document(
            "moon", "The Moon has no atmosphere and its surface is covered in regolith.", {"source": "moon"}
        ),
    ]
    first = service.ingest("lifecycle", docs)
    assert first.chunks_added > 0 and first.chunks_unchanged == 0
    again = service.ingest("lifecycle", docs)
    assert (
        again.chunks_added == 0 and again.chunks_unchanged == first.chunks_added and again.chunks_removed == 0
    )
    assert service.describe("lifecycle").chunks == first.chunks_added

    updated = service.ingest(
        "lifecycle", [Document("moon", "The Moon is Earth's only natural satellite.", {})]
    )
    assert updated.chunks_added == 1 and updated.chunks_removed == 1
    hits = service.search(
        SearchQuery.from_settings(service.settings.search, "lifecycle", "natural satellite of Earth")
    )
    assert hits[0].chunk.document_id == "moon" and "only natural satellite" in hits[0].chunk.text
    assert not any("regolith" in h.chunk.text for h in hits)

    assert service.delete_documents("lifecycle", ["moon"]) == 1
    assert service.delete_documents("lifecycle", ["moon"]) == 0
    info = service.describe("lifecycle")
    assert info.documents == 1
    hits = service.search(
        SearchQuery.from_settings(service.settings.search, "lifecycle", "Moon satellite", mode="bm25")
    )
    assert all(h.chunk.document_id == "penguins" for h in hits)


def test_failed_ingest_leaves_the_previous_state(service: RetrievalService) -> None:
    service.create_collection("atomic")
    service.ingest("atomic", [Document("a", "Alpha document about glaciers and ice sheets.")])
    before = service.describe("atomic")
    with pytest.raises(InvalidDocumentError):
        service.ingest("atomic", [Document("b", "A fine document about deserts."), Document("c", "   ")])
    after = service.describe("atomic")
    assert (after.documents, after.chunks) == (before.documents, before.chunks)
    hits = service.search(
        SearchQuery.from_settings(service.settings.search, "atomic", "deserts", mode="bm25")
    )
    assert not any(h.chunk.document_id == "b" for h in hits)


def test_collection_survives_a_restart(tmp_path: Path) -> None:
    settings = RetrievalSettings(path=tmp_path / "store")
    first = RetrievalService(settings, ModelSettings(), tmp_path)
    first.create_collection("persist")
    first.ingest("persist", [Document("erebus", MARKDOWN, {"source": "notes.md"})])
    expected = [
        (h.chunk.id, h.score)
        for h in first.search(SearchQuery.from_settings(settings.search, "persist", "lava lake volcano"))
    ]
    first.close()
    assert (tmp_path / "store" / "persist" / "shard").is_dir()

    second = RetrievalService(settings, ModelSettings(), tmp_path)
    try:
        info = second.describe("persist")
        assert (info.documents, info.chunks) == (
            1,
            len(second.chunk_documents(info.spec, [Document("erebus", MARKDOWN, {"source": "notes.md"})])),
        )
        got = [
            (h.chunk.id, h.score)
            for h in second.search(SearchQuery.from_settings(settings.search, "persist", "lava lake volcano"))
        ]
        assert got == expected
        again = second.ingest("persist", [Document("erebus", MARKDOWN, {"source": "notes.md"})])
        assert again.chunks_added == 0 and again.chunks_removed == 0  # nothing to rebuild or rewrite
    finally:
        second.close()


def test_long_documents_become_sections_of_whole_chunks(service: RetrievalService) -> None:
    """A document that fits the embedder is one chunk and one section; a long one is several sections of whole,
    consecutive chunks that together cover it exactly."""
    spec = service.create_collection("sections", chunking=ChunkingSettings(section_tokens=300))
    short = Document("short", "The Moon has no atmosphere.")
    long = Document(
        "long",
        "\n\n".join(f"Paragraph {i}. " + "Tides rise and fall with the moon. " * 12 for i in range(12)),
    )
    (one,) = service.sections(spec, [short])
    assert len(one.chunks) == 1 and one.text == short.text
    parts = service.sections(spec, [long])
    assert len(parts) >= 3 and [s.index for s in parts] == list(range(len(parts)))
    chunks = [c for s in parts for c in s.chunks]
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for s in parts:
        assert (
            s.start == s.chunks[0].start
            and s.end == s.chunks[-1].end
            and long.text[s.start : s.end] == s.text
        )
    report = service.ingest("sections", [short, long])
    assert report.chunks_added == len(chunks) + 1
    assert (
        service.describe("sections").documents == 2 and service.describe("sections").chunks == len(chunks) + 1
    )
    service.delete_collection("sections")


def test_cli_ingest_search_and_collections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from ragswap.cli import app

    monkeypatch.setenv("RAGSWAP_SERVER__STATE_DIR", str(tmp_path / "state"))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.md").write_text(MARKDOWN)
    (tmp_path / "docs" / "empty.txt").write_text("")
    runner = CliRunner()
    bad = runner.invoke(app, ["ingest", str(tmp_path / "docs"), "--collection", "cli"])
    assert bad.exit_code == 1 and "empty" in bad.output
    (tmp_path / "docs" / "empty.txt").unlink()
    ok = runner.invoke(app, ["ingest", str(tmp_path / "docs"), "--collection", "cli"])
    assert ok.exit_code == 0, ok.output
    assert "1 documents" in ok.output
    found = runner.invoke(app, ["search", "active volcano lava lake", "-c", "cli", "--json", "-k", "1"])
    assert found.exit_code == 0, found.output
    assert "Erebus" in found.output
    listed = runner.invoke(app, ["collections", "list"])
    assert "cli" in listed.output
    assert runner.invoke(app, ["search", "x", "-c", "missing"]).exit_code == 1
    assert runner.invoke(app, ["collections", "delete", "cli"]).exit_code == 0
