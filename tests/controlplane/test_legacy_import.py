"""Importing a state dir written by the file-based gateway (``tests/fixtures/controlplane/legacy-state``, see its
README) on SQLite and PostgreSQL: everything arrives in one transaction, files are renamed only after the commit,
a failure leaves both sides as they were, and a database in use is never merged into."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from controlplane import (
    ControlPlane,
    Database,
    LegacyImportError,
    NewVersion,
    import_state_dir,
    upgrade,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "controlplane" / "legacy-state"
FINISHED, INTERRUPTED, CANCELLED = "eval-27269ab9b2b74d7a", "eval-f5d60811295e4019", "eval-e4a2141709974f60"


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    shutil.copytree(FIXTURE, state)
    return state


def files(state: Path) -> dict[str, bytes]:
    return {str(p.relative_to(state)): p.read_bytes() for p in sorted(state.rglob("*")) if p.is_file()}


def test_import_on_first_start(db_url: str, state_dir: Path) -> None:
    plane = ControlPlane.open(db_url, state_dir=state_dir)
    try:
        report = plane.imported
        assert report is not None
        assert (report.versions, report.aliases, report.jobs, report.traces) == (3, 2, 3, 7)
        assert not (state_dir / "adapters.json").exists() and (state_dir / "adapters.json.migrated").is_file()
        assert (state_dir / "evaluations.migrated" / FINISHED / "job.json").is_file()

        snap = plane.registry.snapshot()
        assert {v.ref: v.id for v in snap.versions()} == {"alpha@1": 1, "beta@1": 2, "alpha@2": 3}
        assert snap.get("alpha") == snap.get("alpha@2")  # latest
        assert snap.get("beta@1").default_collection == "kb"  # type: ignore[union-attr]
        assert (
            snap.aliases["prod"].target == "alpha@1" and snap.aliases["prod"].default_collection == "handbook"
        )
        assert snap.aliases["canary"].target == "beta@1"
        assert snap.get("alpha@1").created_at == "2026-12-01T20:37:53+00:00"  # type: ignore[union-attr]
        # alpha@3 had id 4 before it was removed: the next version gets 5.
        version, _ = plane.registry.add_version(
            NewVersion("gamma", 1, "/a/g", 8, ["q_proj"], "manifest"), reserved={"smollm2-135m-instruct"}
        )
        assert version.id == 5

        jobs = {j.id: j for j in plane.jobs.recent()}
        assert {j: r.status for j, r in jobs.items()} == {
            FINISHED: "succeeded",
            INTERRUPTED: "queued",  # resumes on a worker
            CANCELLED: "cancelled",
        }
        assert jobs[FINISHED].has_summary and jobs[FINISHED].done == 5 and jobs[FINISHED].total == 5
        assert plane.jobs.summary(FINISHED)["results"]["smollm2-135m-instruct"]["mrr"]["mean"] == 1.0  # type: ignore[index]
        assert (jobs[INTERRUPTED].done, jobs[INTERRUPTED].total, jobs[INTERRUPTED].attempts) == (2, 6, 1)
        assert plane.jobs.traced(INTERRUPTED) == {
            ("smollm2-135m-instruct", "1"),
            ("smollm2-135m-instruct", "2"),
        }
        request = plane.jobs.request(INTERRUPTED)
        assert len(request["samples"]) == 6 and request["metrics"] == ["rouge_l"]
        claimed = plane.jobs.claim("w1", lease_s=30)
        assert claimed is not None and claimed.record.id == INTERRUPTED and claimed.record.resumed == 1
        assert plane.registry.events()[-1]["kind"] == "registry.imported"
    finally:
        plane.close()
    # A second start imports nothing (the files are gone; the database remembers).
    again = ControlPlane.open(db_url, state_dir=state_dir)
    assert again.imported is None
    again.close()


def test_failed_import_leaves_both_sides_as_they_were(
    db_url: str, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import controlplane.legacy as legacy

    before = files(state_dir)
    real = legacy._insert_jobs

    def fail_after_some_rows(session: object, jobs: list, report: object) -> None:
        real(session, jobs[:1], report)  # type: ignore[arg-type]
        raise RuntimeError("disk full")

    monkeypatch.setattr(legacy, "_insert_jobs", fail_after_some_rows)
    with pytest.raises(LegacyImportError, match="disk full") as info:
        ControlPlane.open(db_url, state_dir=state_dir)
    assert "rolled back" in info.value.message
    assert files(state_dir) == before  # nothing renamed
    db = Database(db_url)
    try:
        upgrade(db)
        plane = ControlPlane(db)
        assert plane.registry.snapshot().adapters == {} and plane.jobs.recent() == []
    finally:
        db.close()
    monkeypatch.setattr(legacy, "_insert_jobs", real)
    retried = ControlPlane.open(db_url, state_dir=state_dir)  # the next start succeeds
    assert retried.imported is not None and retried.imported.jobs == 3
    retried.close()


def test_corrupt_registry_refuses_to_start(db_url: str, state_dir: Path) -> None:
    (state_dir / "adapters.json").write_text('{"format": "ragswap-registry/1", "adapters": {"x": 1}}')
    before = files(state_dir)
    with pytest.raises(LegacyImportError) as info:
        ControlPlane.open(db_url, state_dir=state_dir)
    assert "move the file away" in info.value.message
    assert files(state_dir) == before


def test_database_in_use_is_not_merged_into(db_url: str, state_dir: Path, tmp_path: Path) -> None:
    plane = ControlPlane.open(db_url, state_dir=tmp_path / "elsewhere")
    plane.registry.add_version(NewVersion("other", 1, "/a/o", 8, ["q_proj"], "manifest"))
    assert import_state_dir(plane.db, state_dir) is None
    assert (state_dir / "adapters.json").is_file()  # left alone
    assert set(plane.registry.snapshot().adapters) == {"other"}
    plane.close()


def test_torn_and_unreadable_job_files(db_url: str, state_dir: Path) -> None:
    traces = state_dir / "evaluations" / INTERRUPTED / "run" / "traces.jsonl"
    traces.write_text(traces.read_text() + '{"sample_id": "3", "config": "smollm2')  # a crash mid-write
    (state_dir / "evaluations" / CANCELLED / "request.json").write_text("{not json")
    plane = ControlPlane.open(db_url, state_dir=state_dir)
    try:
        assert plane.imported is not None and plane.imported.skipped_jobs == [CANCELLED]
        assert plane.jobs.get(INTERRUPTED).done == 2
        assert json.loads((state_dir / "evaluations.migrated" / CANCELLED / "job.json").read_text())  # kept
    finally:
        plane.close()
