"""The evaluation queue on SQLite and PostgreSQL: claims are exclusive, leases expire and jobs move on, every trace
write is fenced by the lease, and a sample can be stored only once."""

from __future__ import annotations

import threading
import time

import pytest

from controlplane import ControlPlane, JobStore, LeaseLostError, RecordConflictError, RecordNotFoundError


def enqueue(jobs: JobStore, job_id: str, total: int = 3) -> None:
    jobs.enqueue(
        job_id,
        name=job_id,
        request={"samples": list(range(total))},
        configs=["base"],
        metrics=["rouge_l"],
        total=total,
        created_by="…user",
    )


def trace(sample: str) -> dict[str, object]:
    return {"config": "base", "sample_id": sample, "answer": "x", "scores": {}}


def test_lifecycle(plane: ControlPlane) -> None:
    jobs = plane.jobs
    enqueue(jobs, "j1")
    assert jobs.claim("w1", lease_s=30) is not None
    assert jobs.claim("w2", lease_s=30) is None  # the only job is leased
    record = jobs.get("j1")
    assert (record.status, record.worker, record.attempts, record.resumed) == ("running", "w1", 1, 0)
    for sample in ("1", "2"):
        jobs.append_trace("j1", "w1", 1, "base", sample, trace(sample))
    assert jobs.get("j1").done == 2 and jobs.traced("j1") == {("base", "1"), ("base", "2")}
    jobs.heartbeat("j1", "w1", lease_s=30)
    with pytest.raises(LeaseLostError):
        jobs.heartbeat("j1", "w2", lease_s=30)
    jobs.append_trace("j1", "w1", 1, "base", "3", trace("3"))
    jobs.finish("j1", "w1", "succeeded", summary={"run_id": "j1", "results": {}})
    done = jobs.get("j1")
    assert (
        done.status == "succeeded" and done.finished_at and done.has_summary and done.lease_expires_at is None
    )
    assert jobs.summary("j1") == {"run_id": "j1", "results": {}}
    assert [t["sample_id"] for t in jobs.traces("j1")] == ["1", "2", "3"]
    with pytest.raises(RecordConflictError):
        jobs.cancel("j1")
    with pytest.raises(RecordNotFoundError):
        jobs.get("nope")


def test_expired_lease_moves_the_job_to_another_worker(plane: ControlPlane) -> None:
    jobs = plane.jobs
    enqueue(jobs, "j1")
    first = jobs.claim("dead-worker", lease_s=0.5)
    assert first is not None and first.attempt == 1
    jobs.append_trace("j1", "dead-worker", 1, "base", "1", trace("1"))
    assert jobs.claim("w2", lease_s=30) is None
    time.sleep(0.7)
    second = jobs.claim("w2", lease_s=30)
    assert second is not None and second.attempt == 2 and second.record.resumed == 1
    assert jobs.traced("j1") == {("base", "1")}  # it resumes from here
    # The old worker comes back from a pause: every write it attempts is refused.
    with pytest.raises(LeaseLostError) as info:
        jobs.append_trace("j1", "dead-worker", 1, "base", "2", trace("2"))
    assert info.value.code == "lease_lost"
    with pytest.raises(LeaseLostError):
        jobs.finish("j1", "dead-worker", "succeeded", summary={})
    jobs.append_trace("j1", "w2", 2, "base", "2", trace("2"))
    # The same sample twice is impossible, even for the lease holder.
    with pytest.raises(LeaseLostError) as info:
        jobs.append_trace("j1", "w2", 2, "base", "2", trace("2"))
    assert info.value.code == "already_traced"
    assert jobs.get("j1").done == 2
    assert [(c, s, w, a) for c, s, w, a in jobs.trace_rows("j1")] == [
        ("base", "1", "dead-worker", 1),
        ("base", "2", "w2", 2),
    ]


def test_release_and_cancel(plane: ControlPlane) -> None:
    jobs = plane.jobs
    enqueue(jobs, "j1")
    enqueue(jobs, "j2")
    claimed = jobs.claim("w1", lease_s=30)
    assert claimed is not None and claimed.record.id == "j1"  # oldest first
    jobs.release("j1", "w1")  # graceful stop
    assert jobs.get("j1").status == "queued"
    again = jobs.claim("w2", lease_s=30)
    assert again is not None and again.record.id == "j1" and again.record.resumed == 1
    cancelled = jobs.cancel("j1")
    assert cancelled.status == "cancelled" and cancelled.cancel_requested
    with pytest.raises(LeaseLostError) as info:
        jobs.append_trace("j1", "w2", 2, "base", "1", trace("1"))
    assert info.value.code == "evaluation_cancelled"
    queued = jobs.cancel("j2")  # never started
    assert queued.status == "cancelled" and queued.started_at is None
    assert jobs.claim("w3", lease_s=30) is None
    assert [r.id for r in jobs.recent()] == ["j2", "j1"]
    assert [r.id for r in jobs.recent(status="cancelled")] == ["j2", "j1"]


def test_concurrent_claims_hand_out_each_job_once(plane: ControlPlane) -> None:
    jobs = plane.jobs
    for i in range(12):
        enqueue(jobs, f"j{i:02d}")
    claimed: list[tuple[str, str]] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while (job := jobs.claim(name, lease_s=60)) is not None:
            with lock:
                claimed.append((job.record.id, name))

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(j for j, _ in claimed) == [f"j{i:02d}" for i in range(12)]
