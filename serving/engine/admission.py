"""Gateway-side admission of adapter requests to a replica's LoRA slots.

A vLLM engine batches at most ``max_loras`` distinct adapters per step and caches ``max_cpu_loras`` of them in
memory; with more adapters in use, requests for the others wait inside the engine, and each adapter that moves into
a slot may first have to be read from disk while the whole batch waits. vLLM's scheduler fills a freed slot with
whatever request is oldest, and never frees a slot while an adapter keeps receiving requests (its rare adapters can
wait without bound).

:class:`SlotAdmission` sits in front of one replica and keeps the adapters in flight there within its slots:

- a request whose adapter already holds a slot goes straight through (grouping: it joins a running batch);
- a request for another adapter takes a free slot, or waits at the gateway;
- when a slot frees, the waiting adapter with the most requests gets it (a full batch), preferring one the engine
  likely still has in memory (recently in a slot: no disk read), and all its waiting requests go together;
- bounded wait: once a request has waited ``max_wait_s``, new requests for the adapters in slots are held too, so a
  slot drains and the oldest waiting adapter gets it next.

Base-model requests need no slot and are never held. The state is the gateway's own bookkeeping (what it sent and
what finished), so it is exact for a single gateway; with several gateways per replica it is an estimate and the
engine's own queue absorbs the difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar


@dataclass(eq=False)
class _Waiter:
    adapter: str
    since: float
    admitted: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class SlotAdmission:
    """Admission to one replica's ``slots`` LoRA slots; see the module docstring for the policy.

    Args:
        slots: the engine's ``max_loras``.
        cached: the engine's ``max_cpu_loras`` (how many recently used adapters count as in memory).
        max_wait_s: how long a request may wait for a slot before the others are held back for it.

    Example:
        >>> admission = SlotAdmission(slots=4, cached=16, max_wait_s=2.0)
        >>> async with admission.admit("support@3"):
        ...     ...  # send the request to the replica
    """

    def __init__(self, slots: int, cached: int, max_wait_s: float) -> None:
        self.slots = slots
        self.cached = cached
        self.max_wait_s = max_wait_s
        self.in_flight: dict[str, int] = {}
        """Adapter -> admitted requests not finished yet; each key holds one slot."""
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._waiting: OrderedDict[str, deque[_Waiter]] = OrderedDict()

    # ---- state ------------------------------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    def holds(self, adapter: str) -> bool:
        """The adapter has a slot here right now (a request for it joins the running batch)."""
        return adapter in self.in_flight

    def has_free_slot(self) -> bool:
        return len(self.in_flight) < self.slots and not self._waiting

    def recently_used(self, adapter: str) -> bool:
        """The adapter was in a slot recently enough that the engine likely still has it in memory."""
        return adapter in self._recent

    def _oldest(self) -> _Waiter | None:
        oldest = None
        for queue in self._waiting.values():
            if queue and (oldest is None or queue[0].since < oldest.since):
                oldest = queue[0]
        return oldest

    def _starving(self, now: float) -> _Waiter | None:
        """The oldest waiter, if it has waited past the bound."""
        oldest = self._oldest()
        return oldest if oldest is not None and now - oldest.since >= self.max_wait_s else None

    # ---- admission ----------------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def admit(self, adapter: str | None) -> AsyncIterator[None]:
        """Hold the request until its adapter may be in flight here; release its slot share on exit."""
        if adapter is None:
            yield
            return
        if self._may_enter(adapter, time.monotonic()):
            self._enter(adapter, 1)
        else:
            waiter = _Waiter(adapter, time.monotonic())
            self._waiting.setdefault(adapter, deque()).append(waiter)
            try:
                await waiter.admitted
            except BaseException:
                if waiter.admitted.done() and not waiter.admitted.cancelled():
                    self._leave(adapter)  # admitted, then cancelled before it could run: give the share back
                else:
                    self._forget(waiter)
                raise
        try:
            yield
        finally:
            self._leave(adapter)

    def _may_enter(self, adapter: str, now: float) -> bool:
        starving = self._starving(now)
        if starving is not None and starving.adapter != adapter:
            return False  # hold everyone else until a slot frees for the request that waited too long
        if adapter in self.in_flight:
            return True
        return len(self.in_flight) < self.slots and not self._waiting

    def _enter(self, adapter: str, count: int) -> None:
        self.in_flight[adapter] = self.in_flight.get(adapter, 0) + count
        self._recent[adapter] = None
        self._recent.move_to_end(adapter)
        while len(self._recent) > self.cached:
            self._recent.popitem(last=False)

    def _leave(self, adapter: str) -> None:
        left = self.in_flight.get(adapter, 0) - 1
        if left > 0:
            self.in_flight[adapter] = left
        else:
            self.in_flight.pop(adapter, None)
        self._dispatch()

    def _forget(self, waiter: _Waiter) -> None:
        queue = self._waiting.get(waiter.adapter)
        if queue is not None:
            with contextlib.suppress(ValueError):
                queue.remove(waiter)
            if not queue:
                del self._waiting[waiter.adapter]
        self._dispatch()

    def _release_all(self, adapter: str) -> None:
        queue = self._waiting.pop(adapter, None)
        if not queue:
            return
        self._enter(adapter, len(queue))
        for waiter in queue:
            waiter.admitted.set_result(None)

    def _dispatch(self) -> None:
        """Hand freed slots to waiting adapters; let held requests of slot-holding adapters through."""
        now = time.monotonic()
        while self._waiting:
            starving = self._starving(now)
            if starving is None:
                for adapter in [a for a in self._waiting if a in self.in_flight]:
                    self._release_all(adapter)  # held back for a starving request that got its slot since
                if not self._waiting:
                    return
            if len(self.in_flight) >= self.slots:
                if starving is not None and starving.adapter in self.in_flight:
                    self._release_all(starving.adapter)
                    continue
                return
            if starving is not None:
                self._release_all(starving.adapter)
                continue
            best = max(
                self._waiting,
                key=lambda a: (len(self._waiting[a]), a in self._recent, -self._waiting[a][0].since),
            )
            self._release_all(best)


class _HasAdmission(Protocol):
    outstanding: int

    @property
    def admission(self) -> SlotAdmission | None: ...


R = TypeVar("R", bound=_HasAdmission)


def prefer(replicas: Sequence[R], adapter: str, capacity: int) -> list[R]:
    """The replicas to pick the least busy from for a request on ``adapter``: where it joins a running batch
    (while that replica has room, ``capacity`` = its ``max_num_seqs``), else where a slot is free, else where the
    engine likely has it in memory; otherwise all of them."""
    with_admission = [r for r in replicas if r.admission is not None]
    for keep in (
        lambda a: a.holds(adapter),
        lambda a: a.has_free_slot(),
        lambda a: a.recently_used(adapter),
    ):
        chosen = [r for r in with_admission if keep(r.admission) and r.outstanding < capacity]
        if chosen:
            return chosen
    return list(replicas)
