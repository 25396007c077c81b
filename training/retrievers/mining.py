"""BM25 over the corpus (bm25s, English Snowball stemmer, stopwords) to rank candidates and mine hard negatives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Bm25Index:
    """A bm25s index of ``doc_ids`` (same order as the indexed texts)."""

    retriever: Any
    stemmer: Any
    doc_ids: list[str]

    def search(self, queries: list[str], k: int) -> list[list[str]]:
        """Top ``k`` doc ids of each query, best first."""
        return [[doc for doc, _ in row] for row in self.search_scored(queries, k)]

    def search_scored(self, queries: list[str], k: int) -> list[list[tuple[str, float]]]:
        """Top ``k`` (doc id, BM25 score) of each query, best first."""
        import bm25s

        tokens = bm25s.tokenize(queries, stopwords="en", stemmer=self.stemmer, show_progress=False)
        k = min(k, len(self.doc_ids))
        results, scores = self.retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        return [
            [(self.doc_ids[int(i)], float(s)) for i, s in zip(row, row_scores, strict=True)]
            for row, row_scores in zip(results, scores, strict=True)
        ]


def build_bm25(corpus: dict[str, str]) -> Bm25Index:
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    doc_ids = list(corpus)
    tokens = bm25s.tokenize(
        [corpus[d] for d in doc_ids], stopwords="en", stemmer=stemmer, show_progress=False
    )
    retriever = bm25s.BM25()
    retriever.index(tokens, show_progress=False)
    return Bm25Index(retriever=retriever, stemmer=stemmer, doc_ids=doc_ids)


def hard_negatives(
    index: Bm25Index,
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    query_ids: list[str],
    *,
    per_query: int,
    skip_top: int = 0,
    depth: int = 50,
) -> dict[str, list[str]]:
    """BM25's best-ranked non-relevant documents of each query (the ones a ranker confuses most).

    ``skip_top`` leaves out the very first hits, which are more often unjudged relevant documents.
    """
    ranked = index.search([queries[q] for q in query_ids], k=depth)
    out = {}
    for qid, docs in zip(query_ids, ranked, strict=True):
        negatives = [d for d in docs if d not in qrels.get(qid, {})]
        out[qid] = negatives[skip_top : skip_top + per_query]
    return out
