"""Gateway admission to a replica's LoRA slots: grouping, the freed slot going to the fullest waiting adapter,
bounded wait, base requests never held, no leaked slot on cancellation; adapter-aware replica preference."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from serving.engine.admission import SlotAdmission, prefer


class _Requests:
    """Requests that enter the admission and stay in flight until told to finish."""

    def __init__(self, admission: SlotAdmission) -> None:
        self.admission = admission
        self.admitted: list[str] = []
        self._done: dict[int, asyncio.Event] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}

    def send(self, key: int, adapter: str | None) -> None:
        done = self._done[key] = asyncio.Event()

        async def run() -> None:
            async with self.admission.admit(adapter):
                self.admitted.append(f"{key}:{adapter}")
                await done.wait()

        self._tasks[key] = asyncio.create_task(run())

    def finish(self, key: int) -> None:
        self._done[key].set()

    def cancel(self, key: int) -> None:
        self._tasks[key].cancel()

    async def settle(self) -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    async def close(self) -> None:
        for key in self._done:
            self.finish(key)
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)


async def test_requests_join_slot_holding_adapters_and_wait_for_a_free_slot() -> None:
    reqs = _Requests(SlotAdmission(slots=2, cached=8, max_wait_s=60))
    reqs.send(1, "a")
    reqs.send(2, "b")
    reqs.send(3, "c")  # both slots taken: waits
    reqs.send(4, "a")  # a holds a slot: joins its batch at once
    reqs.send(5, None)  # the base model needs no slot
    await reqs.settle()
    assert reqs.admitted == ["1:a", "2:b", "4:a", "5:None"]
    assert reqs.admission.waiting == 1 and not reqs.admission.has_free_slot()
    reqs.finish(1)  # a still has request 4 in flight: keeps its slot
    await reqs.settle()
    assert reqs.admission.waiting == 1
    reqs.finish(2)
    await reqs.settle()
    assert reqs.admitted[-1] == "3:c" and reqs.admission.holds("c") and not reqs.admission.holds("b")
    await reqs.close()
    assert reqs.admission.in_flight == {}


async def test_a_freed_slot_goes_to_the_waiting_adapter_with_most_requests() -> None:
    reqs = _Requests(SlotAdmission(slots=1, cached=8, max_wait_s=60))
    reqs.send(1, "a")
    reqs.send(2, "c")  # oldest waiter, alone
    for key in (3, 4, 5):
        reqs.send(key, "d")
    await reqs.settle()
    reqs.finish(1)
    await reqs.settle()
    assert reqs.admitted == ["1:a", "3:d", "4:d", "5:d"]  # one batch of d, together
    assert reqs.admission.waiting == 1
    await reqs.close()


async def test_bounded_wait_holds_back_slot_holders_until_the_old_request_runs() -> None:
    reqs = _Requests(SlotAdmission(slots=1, cached=8, max_wait_s=0.05))
    reqs.send(1, "a")
    reqs.send(2, "c")
    await reqs.settle()
    await asyncio.sleep(0.06)  # c has now waited past the bound
    reqs.send(3, "a")  # would join a's batch, but is held so that a's slot drains
    reqs.send(4, None)
    await reqs.settle()
    assert reqs.admitted == ["1:a", "4:None"]
    reqs.finish(1)
    await reqs.settle()
    assert reqs.admitted[-1] == "2:c"
    reqs.finish(2)
    await reqs.settle()
    assert reqs.admitted[-1] == "3:a"
    await reqs.close()
    assert reqs.admission.in_flight == {} and reqs.admission.waiting == 0


async def test_cancelled_requests_leave_no_slot_or_queue_entry_behind() -> None:
    admission = SlotAdmission(slots=1, cached=8, max_wait_s=60)
    reqs = _Requests(admission)
    reqs.send(1, "a")
    reqs.send(2, "b")
    await reqs.settle()
    reqs.cancel(2)  # a client gave up while waiting
    await reqs.settle()
    assert admission.waiting == 0
    reqs.cancel(1)  # and one while running
    await reqs.settle()
    assert admission.in_flight == {} and admission.has_free_slot()
    await reqs.close()


@dataclass
class _Replica:
    index: int
    outstanding: int
    admission: SlotAdmission | None


@pytest.mark.parametrize("capacity", [64, 3])
async def test_replica_preference_groups_adapters_while_there_is_room(capacity: int) -> None:
    busy = _Replica(0, 3, SlotAdmission(slots=1, cached=8, max_wait_s=60))
    idle = _Replica(1, 0, SlotAdmission(slots=1, cached=8, max_wait_s=60))
    async with busy.admission.admit("a"):  # type: ignore[union-attr]
        chosen = prefer([busy, idle], "a", capacity)
        # a runs on the busy replica: join it while it has room, else spread to a free slot elsewhere.
        assert chosen == ([busy] if capacity > busy.outstanding else [idle])
        assert prefer([busy, idle], "b", capacity) == [idle]  # a free slot beats waiting for one
    async with idle.admission.admit("x"), busy.admission.admit("y"):  # type: ignore[union-attr]
        # no slot free anywhere: where the engine still has the adapter in memory
        assert prefer([busy, idle], "a", 64) == [busy]
        assert prefer([busy, idle], "z", 64) == [busy, idle]
