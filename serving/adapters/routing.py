"""Which version of a weighted alias serves a request.

With a sticky key (the OpenAI ``user`` field or the ``X-Ragswap-Session`` header) the choice is weighted
rendezvous (highest-random-weight) hashing: every target gets the score ``-weight / ln(u)``, where ``u`` in
(0, 1) is a hash of (alias, key, target), and the highest score wins. A target then wins for a share of keys
equal to its weight, a key keeps its version for as long as the alias's targets stay the same, and when weights
change only the keys that must move do (moving 10 points from one target to another moves those 10 % of users,
and no user moves between two targets whose weights did not change). Without a key the choice is random per
request, in proportion to the weights.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from typing import Protocol

SESSION_HEADER = "x-ragswap-session"
"""Request header naming a conversation or session; wins over the request's ``user`` field."""
VERSION_HEADER = "x-ragswap-model-version"
"""Response header naming the concrete ``name@version`` that served the request (or the base model)."""


class HasHeaders(Protocol):
    @property
    def headers(self) -> Mapping[str, str]: ...


def sticky_key(request: HasHeaders, user: str | None) -> str | None:
    """The request's session: the ``X-Ragswap-Session`` header, else the OpenAI ``user`` field, else none."""
    session = request.headers.get(SESSION_HEADER)
    if session:
        return f"session:{session[:256]}"
    return f"user:{user}" if user else None


class WeightedTarget(Protocol):
    @property
    def ref(self) -> str: ...

    @property
    def weight(self) -> int: ...


def _unit(alias: str, key: str, ref: str) -> float:
    digest = hashlib.blake2b(f"{alias}\x00{key}\x00{ref}".encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2**64  # in (0, 1): never 0, never 1


def sticky_choice(alias: str, targets: Sequence[WeightedTarget], key: str) -> WeightedTarget:
    """The target ``key`` is assigned to (weighted rendezvous hashing; deterministic across gateways)."""
    return max(
        (t for t in targets if t.weight > 0),
        key=lambda t: -t.weight / math.log(_unit(alias, key, t.ref)),
    )


def choose_target(
    alias: str,
    targets: Sequence[WeightedTarget],
    key: str | None,
    rng: random.Random | None = None,
) -> WeightedTarget:
    """The target a request to ``alias`` goes to: sticky by ``key`` when given, else random by weight."""
    if len(targets) == 1:
        return targets[0]
    if key:
        return sticky_choice(alias, targets, key)
    return (rng or random).choices(list(targets), weights=[t.weight for t in targets])[0]
