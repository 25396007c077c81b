"""Weighted alias assignment (no engine): shares follow the weights within the binomial 99 % interval, sticky keys
keep their version, and a weight change moves only the keys it must (rendezvous hashing, not reshuffling)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from scipy.stats import binom

from serving.adapters.protocol import AliasUpdate
from serving.adapters.routing import choose_target, sticky_choice, sticky_key


@dataclass(frozen=True)
class T:
    ref: str
    weight: int


def binomial_99(n: int, p: float) -> tuple[int, int]:
    """The central 99 % interval of Binomial(n, p)."""
    lo, hi = binom.interval(0.99, n, p)
    return int(lo), int(hi)


def test_sticky_shares_follow_the_weights() -> None:
    split = [T("acme@2", 80), T("acme@3", 20)]
    lo, hi = binomial_99(400, 0.2)
    canary = sum(sticky_choice("bot", split, f"user-{i}").ref == "acme@3" for i in range(400))
    assert lo <= canary <= hi, (canary, lo, hi)
    three = [T("a@1", 50), T("a@2", 30), T("a@3", 20)]
    counts = {t.ref: 0 for t in three}
    for i in range(3000):
        counts[sticky_choice("bot", three, f"u{i}").ref] += 1
    for t in three:
        lo, hi = binomial_99(3000, t.weight / 100)
        assert lo <= counts[t.ref] <= hi, counts


def test_per_request_draws_follow_the_weights() -> None:
    split = [T("acme@2", 80), T("acme@3", 20)]
    rng = random.Random(7)
    lo, hi = binomial_99(400, 0.2)
    canary = sum(choose_target("bot", split, None, rng).ref == "acme@3" for _ in range(400))
    assert lo <= canary <= hi
    assert choose_target("bot", [T("only@1", 100)], "anyone").ref == "only@1"


def test_a_weight_change_moves_only_the_keys_it_must() -> None:
    users = [f"user-{i}" for i in range(2000)]
    before = {u: sticky_choice("bot", [T("acme@2", 90), T("acme@3", 10)], u).ref for u in users}
    assert all(sticky_choice("bot", [T("acme@2", 90), T("acme@3", 10)], u).ref == before[u] for u in users)
    after = {u: sticky_choice("bot", [T("acme@2", 80), T("acme@3", 20)], u).ref for u in users}
    moved = [u for u in users if before[u] != after[u]]
    # Only acme@2 → acme@3 moves (the share that shrank), never back: nobody on the canary is reshuffled.
    assert all(before[u] == "acme@2" and after[u] == "acme@3" for u in moved)
    # The minimum possible: 10 % of users must move for a 10-point change; reshuffling would move ~26 %.
    lo, hi = binomial_99(len(users), 0.10)
    assert lo <= len(moved) <= hi, len(moved)
    # A new canary taking 10 points evenly from two targets takes users only onto itself, never across the two.
    two = {u: sticky_choice("bot", [T("a@1", 50), T("a@2", 50)], u).ref for u in users}
    three = {u: sticky_choice("bot", [T("a@1", 45), T("a@2", 45), T("a@3", 10)], u).ref for u in users}
    assert all(three[u] in (two[u], "a@3") for u in users)
    assert binomial_99(len(users), 0.10)[0] <= sum(three[u] == "a@3" for u in users)


def test_sticky_key_prefers_the_session_header() -> None:
    class Req:
        def __init__(self, headers: dict[str, str]) -> None:
            self.headers = headers

    assert sticky_key(Req({"x-ragswap-session": "s1"}), "alice") == "session:s1"
    assert sticky_key(Req({}), "alice") == "user:alice"
    assert sticky_key(Req({}), None) is None


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({}, "either"),
        ({"target": "a@1", "targets": [{"target": "a@1", "weight": 100}]}, "either"),
        ({"targets": [{"target": "a@1", "weight": 60}, {"target": "a@2", "weight": 30}]}, "sum to 100"),
        ({"targets": [{"target": "a@1", "weight": 50}, {"target": "a@1", "weight": 50}]}, "twice"),
        ({"targets": [{"target": "a@1", "weight": 0}, {"target": "a@2", "weight": 100}]}, "greater than"),
    ],
)
def test_alias_update_rejects_bad_splits(body: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        AliasUpdate.model_validate(body)


def test_alias_update_split() -> None:
    body = AliasUpdate.model_validate(
        {"targets": [{"target": "a@2", "weight": 90}, {"target": "a@3", "weight": 10}], "reason": "canary"}
    )
    assert body.split() == [("a@2", 90), ("a@3", 10)]
    assert AliasUpdate(target="a@2").split() == "a@2"
