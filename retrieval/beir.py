"""Judged retrieval data in the BEIR layout: the one loader of ragswap (training, ``collections tune``, benchmarks).

    <folder>/corpus.jsonl      {"_id", "title"?, "text", "metadata"?} per line
    <folder>/queries.jsonl     {"_id", "text"} per line
    <folder>/qrels/<split>.tsv query-id, corpus-id, score (a header line is allowed)

Relevance is graded (``score``); judgements with ``score <= 0`` are dropped, as BEIR does.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrieval.errors import InvalidDatasetError
from retrieval.types import Document

Qrels = dict[str, dict[str, int]]
"""query id → {document id: relevance grade > 0}."""


@dataclass
class BeirData:
    """One BEIR dataset in memory."""

    corpus: dict[str, str]
    """Document id → text as ingested (``title``, a blank line, then the body; like the JSONL loader)."""
    metadata: dict[str, dict[str, Any]]
    queries: dict[str, str]
    qrels: Qrels
    fingerprint: str
    """sha256 over the files read, recorded in manifests and benchmark results."""

    def documents(self) -> list[Document]:
        return [Document(d, text, self.metadata.get(d, {})) for d, text in self.corpus.items()]

    def subset_corpus(self, doc_ids: Iterable[str]) -> BeirData:
        keep = set(doc_ids)
        return BeirData(
            corpus={d: t for d, t in self.corpus.items() if d in keep},
            metadata={d: m for d, m in self.metadata.items() if d in keep},
            queries=self.queries,
            qrels=self.qrels,
            fingerprint=self.fingerprint,
        )


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidDatasetError(f"{path}:{lineno}: malformed JSON line: {exc.msg}") from exc
            if not isinstance(row, dict) or "_id" not in row:
                raise InvalidDatasetError(f"{path}:{lineno}: expected an object with an _id")
            yield lineno, row


def read_queries(path: Path) -> dict[str, str]:
    """``queries.jsonl``: query id → text."""
    if not path.is_file():
        raise InvalidDatasetError(f"queries file not found: {path}", param="queries")
    return {str(row["_id"]): str(row.get("text", "")) for _, row in _jsonl(path)}


def read_qrels(path: Path) -> Qrels:
    """A qrels TSV (``query-id  corpus-id  score``, optional header): positive judgements only."""
    if not path.is_file():
        raise InvalidDatasetError(f"qrels file not found: {path}", param="qrels")
    qrels: Qrels = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, row in enumerate(csv.reader(fh, delimiter="\t"), start=1):
            if not row or (lineno == 1 and row[0] == "query-id"):
                continue
            if len(row) < 3:
                raise InvalidDatasetError(
                    f"{path}:{lineno}: expected query-id, corpus-id, score", param="qrels"
                )
            try:
                grade = int(float(row[2]))
            except ValueError as exc:
                raise InvalidDatasetError(
                    f"{path}:{lineno}: score {row[2]!r} is not a number", param="qrels"
                ) from exc
            if grade > 0:
                qrels.setdefault(row[0], {})[row[1]] = grade
    return qrels


def load_beir(data_dir: Path, split: str = "train") -> BeirData:
    """Read a BEIR folder with the judgements of ``split``; only judged queries whose documents exist are kept.

    Raises:
        InvalidDatasetError: a file is missing or malformed, or no judgement is usable.
    """
    data_dir = Path(data_dir)
    files = [data_dir / "corpus.jsonl", data_dir / "queries.jsonl", data_dir / "qrels" / f"{split}.tsv"]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise InvalidDatasetError(f"BEIR file(s) missing: {', '.join(missing)}")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    corpus: dict[str, str] = {}
    metadata: dict[str, dict[str, Any]] = {}
    for _, row in _jsonl(files[0]):
        title, body = str(row.get("title") or "").strip(), str(row.get("text") or "").strip()
        text = f"{title}\n\n{body}" if title and body else title or body
        if not text:
            continue
        doc = str(row["_id"])
        corpus[doc] = text
        meta = dict(row.get("metadata") or {})
        if title:
            meta.setdefault("title", title)
        metadata[doc] = meta
    queries = read_queries(files[1])
    qrels = {
        q: rel
        for q, judged in read_qrels(files[2]).items()
        if q in queries and (rel := {d: g for d, g in judged.items() if d in corpus})
    }
    if not qrels:
        raise InvalidDatasetError(f"{files[2]}: no usable judgements")
    return BeirData(corpus, metadata, queries, qrels, digest.hexdigest())


def id_byte(qid: str, i: int = 0) -> int:
    """Byte ``i`` of sha1(query id): an order-free, reproducible key for splitting queries."""
    return hashlib.sha1(qid.encode()).digest()[i]


def split_queries(
    query_ids: list[str], eval_fraction: float = 0.5, seed: int = 42
) -> tuple[list[str], list[str]]:
    """A seeded (train, held-apart) split of judged query ids; the held-apart part is never trained on."""
    ids = sorted(query_ids)
    random.Random(seed).shuffle(ids)
    n_eval = round(len(ids) * eval_fraction)
    return ids[n_eval:], ids[:n_eval]
