"""IR and id-based metrics, ROUGE-L and the statistics: exact, hand-checkable values."""

from __future__ import annotations

import math

import pytest

from eval.metrics import ir
from eval.metrics.answer import rouge_l
from eval.records import MetricScore, RetrievedChunk
from eval.scoring import ranked_ids
from eval.stats import bootstrap_ci, summarise


def test_ndcg_recall_mrr_exact() -> None:
    retrieved = ["d3", "d1", "d7", "d2"]
    relevant = {"d1", "d2"}
    # DCG = 1/log2(3) + 1/log2(5); IDCG = 1 + 1/log2(3)
    expected = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert ir.ndcg_at_k(retrieved, relevant, 5) == pytest.approx(expected)
    assert ir.ndcg_at_k(retrieved, relevant, 2) == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert ir.ndcg_at_k(["d1", "d2"], relevant, 2) == pytest.approx(1.0)
    assert ir.recall_at_k(retrieved, relevant, 2) == 0.5
    assert ir.recall_at_k(retrieved, relevant, 4) == 1.0
    assert ir.mrr(retrieved, relevant) == 0.5
    assert ir.mrr(["x", "y"], relevant) == 0.0
    assert ir.id_context_precision(retrieved, relevant) == 0.5
    assert ir.id_context_recall(["d1", "x"], relevant) == 0.5
    with pytest.raises(ValueError):
        ir.ndcg_at_k(retrieved, set(), 5)


def test_chunks_map_to_document_ids_once_at_best_rank() -> None:
    chunks = [
        RetrievedChunk(id="c1", doc_id="d9", text="a"),
        RetrievedChunk(id="c2", doc_id="d1", text="b"),
        RetrievedChunk(id="c3", doc_id="d1", text="c"),
        RetrievedChunk(id="c4", doc_id="d2", text="d"),
    ]
    ranked = ranked_ids(chunks, {"d1", "d2"})
    assert ranked == ["d9", "d1", "d2"]
    assert ir.mrr(ranked, {"d1", "d2"}) == 0.5
    # Reference ids at chunk granularity are matched on the chunk id.
    assert ranked_ids(chunks, {"c3"}) == ["d9", "d1", "c3", "d2"]


def test_rouge_l_exact() -> None:
    # LCS("the cat sat on the mat", "the cat is on the mat") = "the cat on the mat" = 5 tokens of 6 and 6.
    assert rouge_l("The cat sat on the mat.", "the cat is on the mat") == pytest.approx(5 / 6)
    assert rouge_l("Paris", "Paris") == 1.0
    assert rouge_l("Berlin", "Paris") == 0.0
    assert rouge_l("", "Paris") == 0.0


def test_failures_are_counted_never_averaged() -> None:
    scores = [
        MetricScore(name="m", status="ok", value=1.0),
        MetricScore(name="m", status="ok", value=0.5),
        MetricScore(name="m", status="failed", reason="judge output is not a valid X (a: bad)"),
        MetricScore(name="m", status="failed", reason="judge output is not a valid X (b: bad)"),
        MetricScore(name="m", status="skipped", reason="no reference answer"),
    ]
    summary = summarise(scores, resamples=200)
    assert summary.mean == 0.75
    assert (summary.n_ok, summary.n_failed, summary.n_skipped) == (2, 2, 1)
    assert summary.failure_reasons == {"judge output is not a valid X": 2}
    assert summary.ci_low is not None and summary.ci_high is not None
    assert 0.5 <= summary.ci_low <= 0.75 <= summary.ci_high <= 1.0
    empty = summarise([MetricScore(name="m", status="failed", reason="x")])
    assert empty.mean is None and empty.n_failed == 1


def test_bootstrap_ci_is_seeded_and_brackets_the_mean() -> None:
    values = [0.0, 1.0] * 20
    low, high = bootstrap_ci(values, resamples=500)
    assert (low, high) == bootstrap_ci(values, resamples=500)
    assert low < 0.5 < high
    assert bootstrap_ci([0.3]) == (0.3, 0.3)
