"""Retrieval fixtures: a real SciFact subset (BEIR) ingested once per session with the real MiniLM embedder."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ragswap.model_store import ModelSettings
from retrieval.loaders import jsonl_row_to_document
from retrieval.service import RetrievalService
from retrieval.settings import RetrievalSettings
from retrieval.types import Document

SCIFACT = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "scifact"
N_DOCS = 300
N_QUERIES = 20


@dataclass(frozen=True)
class SciFactSubset:
    documents: list[Document]
    queries: dict[str, str]
    qrels: dict[str, set[str]]


@pytest.fixture(scope="session")
def scifact() -> SciFactSubset:
    """300 SciFact documents including every relevant document of the first 20 train queries."""
    if not (SCIFACT / "corpus.jsonl").is_file():
        pytest.skip(f"SciFact not found at {SCIFACT}")
    qrels: dict[str, set[str]] = {}
    with (SCIFACT / "qrels" / "train.tsv").open() as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if len(qrels) >= N_QUERIES and row["query-id"] not in qrels:
                break
            qrels.setdefault(row["query-id"], set()).add(row["corpus-id"])
    queries = {}
    for line in (SCIFACT / "queries.jsonl").open():
        row = json.loads(line)
        if row["_id"] in qrels:
            queries[row["_id"]] = row["text"]
    wanted = set().union(*qrels.values())
    docs: list[Document] = []
    fillers: list[Document] = []
    for line in (SCIFACT / "corpus.jsonl").open():
        row = json.loads(line)
        if row["_id"] in wanted:
            docs.append(jsonl_row_to_document(row, "corpus"))
        elif len(fillers) < N_DOCS:
            fillers.append(jsonl_row_to_document(row, "corpus"))
    docs.extend(fillers[: N_DOCS - len(docs)])
    return SciFactSubset(docs, queries, qrels)


@pytest.fixture(scope="session")
def retrieval_settings(tmp_path_factory: pytest.TempPathFactory) -> RetrievalSettings:
    return RetrievalSettings(path=tmp_path_factory.mktemp("collections"))


@pytest.fixture(scope="session")
def service(retrieval_settings: RetrievalSettings) -> Iterator[RetrievalService]:
    svc = RetrievalService(retrieval_settings, ModelSettings(), Path("/nonexistent"))
    try:
        yield svc
    finally:
        svc.close()


@pytest.fixture(scope="session")
def scifact_collection(service: RetrievalService, scifact: SciFactSubset) -> str:
    """The subset ingested into collection ``scifact`` (each document tagged with its parity for filters)."""
    service.create_collection("scifact")
    docs = [
        Document(
            d.id, d.text, {**d.metadata, "parity": "even" if int(d.id) % 2 == 0 else "odd", "num": int(d.id)}
        )
        for d in scifact.documents
    ]
    service.ingest("scifact", docs)
    return "scifact"
