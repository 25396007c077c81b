"""BEIR-format data (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``) and splits of its queries."""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from training.data import DatasetError


@dataclass
class BeirData:
    """One BEIR dataset in memory; documents are ``title + " " + text``."""

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    """query id → {doc id: relevance > 0}."""
    fingerprint: str
    """sha256 over the three files read, recorded in manifests."""

    def subset_corpus(self, doc_ids: Iterable[str]) -> BeirData:
        keep = set(doc_ids)
        return BeirData(
            corpus={d: t for d, t in self.corpus.items() if d in keep},
            queries=self.queries,
            qrels=self.qrels,
            fingerprint=self.fingerprint,
        )


def _read_jsonl(path: Path) -> list[dict[str, str]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DatasetError([f"{path}:{lineno}: malformed JSON line: {exc.msg}"]) from exc
    return rows


def load_beir(data_dir: Path, split: str = "train") -> BeirData:
    """Read a BEIR directory; only judgements with relevance > 0 are kept."""
    data_dir = Path(data_dir)
    files = [data_dir / "corpus.jsonl", data_dir / "queries.jsonl", data_dir / "qrels" / f"{split}.tsv"]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise DatasetError([f"BEIR file missing: {p}" for p in missing])
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    corpus = {
        str(r["_id"]): f"{r.get('title', '')} {r.get('text', '')}".strip() for r in _read_jsonl(files[0])
    }
    queries = {str(r["_id"]): str(r["text"]) for r in _read_jsonl(files[1])}
    qrels: dict[str, dict[str, int]] = {}
    with files[2].open(encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter="\t")
        for lineno, row in enumerate(reader, start=1):
            if lineno == 1 and row and row[0] == "query-id":
                continue
            if len(row) < 3:
                raise DatasetError([f"{files[2]}:{lineno}: expected query-id, corpus-id, score"])
            if int(row[2]) > 0 and row[0] in queries and row[1] in corpus:
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    if not qrels:
        raise DatasetError([f"{files[2]}: no usable judgements"])
    return BeirData(corpus=corpus, queries=queries, qrels=qrels, fingerprint=digest.hexdigest())


def split_queries(
    query_ids: list[str], eval_fraction: float = 0.5, seed: int = 42
) -> tuple[list[str], list[str]]:
    """A seeded (train, held-apart) split of judged query ids; the held-apart part is never trained on."""
    ids = sorted(query_ids)
    random.Random(seed).shuffle(ids)
    n_eval = round(len(ids) * eval_fraction)
    return ids[n_eval:], ids[:n_eval]
