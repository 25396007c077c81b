"""BM25 over a judged corpus (the engine's BM25: :class:`retrieval.Bm25Index`) to rank candidates and mine hard
negatives."""

from __future__ import annotations

from retrieval import Bm25Index, Bm25Settings

MINING_BM25 = Bm25Settings()
"""BM25's standard parameters (k1, b; average length measured on the corpus): judged training data belongs to no
collection, so no configured ``retrieval.bm25`` section applies to it."""


class CorpusBm25:
    """BM25 over ``corpus`` searched by query text; results are document ids, best first."""

    def __init__(self, corpus: dict[str, str]) -> None:
        self.doc_ids = list(corpus)
        self.index = Bm25Index([corpus[d] for d in self.doc_ids], MINING_BM25)

    def search(self, queries: list[str], k: int) -> list[list[str]]:
        """Top ``k`` doc ids of each query, best first."""
        return [[doc for doc, _ in row] for row in self.search_scored(queries, k)]

    def search_scored(self, queries: list[str], k: int) -> list[list[tuple[str, float]]]:
        """Top ``k`` (doc id, BM25 score) of each query, best first."""
        return [[(self.doc_ids[i], s) for i, s in row] for row in self.index.search(queries, k)]

    def close(self) -> None:
        self.index.close()


def build_bm25(corpus: dict[str, str]) -> CorpusBm25:
    return CorpusBm25(corpus)


def hard_negatives(
    index: CorpusBm25,
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
