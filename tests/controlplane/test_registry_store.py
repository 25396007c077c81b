"""The registry's transactions on SQLite and PostgreSQL: versions, ids never reused, aliases, conflicts that change
nothing, history, and concurrent writers that cannot break the invariants."""

from __future__ import annotations

import threading

import pytest

from controlplane import (
    ControlPlane,
    NewVersion,
    RecordConflictError,
    RecordNotFoundError,
)

BASE = "base-model"


def new(name: str, version: int, collection: str | None = None) -> NewVersion:
    return NewVersion(
        name=name,
        version=version,
        path=f"/adapters/{name}-{version}",
        rank=8,
        target_modules=["q_proj", "v_proj"],
        base_check="manifest",
        default_collection=collection,
        details={"alpha": 16},
    )


def test_versions_ids_and_snapshot(plane: ControlPlane) -> None:
    store = plane.registry
    empty = store.snapshot()
    assert (empty.change, empty.adapters, empty.aliases, empty.pending_unloads) == (0, {}, {}, {})
    a1, c1 = store.add_version(new("alpha", 1), reserved={BASE}, actor="…min1")
    b1, c2 = store.add_version(new("beta", 1, "kb"), ["prod"], reserved={BASE})
    a2, _ = store.add_version(new("alpha", 2), reserved={BASE})
    assert (a1.id, b1.id, a2.id) == (1, 2, 3) and c2 > c1
    assert store.next_version("alpha") == 3 and store.next_version("gamma") == 1

    snap = store.snapshot()
    assert snap.change == store.change()
    assert snap.get("alpha") == a2 and snap.get("alpha@1") == a1 and snap.get("alpha@9") is None
    assert snap.get("alpha@x") is None
    assert snap.engine_names() == {"alpha@1", "alpha@2", "beta@1"}
    assert snap.aliases["prod"].target == "beta@1"
    assert [t.weight for t in snap.aliases["prod"].targets] == [100]
    assert a1.details == {"alpha": 16} and b1.default_collection == "kb"

    removal = store.remove("alpha@2")
    assert [v.ref for v in removal.versions] == ["alpha@2"]
    assert store.snapshot().pending_unloads["alpha@2"][0] == removal.change
    a3, _ = store.add_version(new("alpha", 2), reserved={BASE})
    assert a3.id == 4  # id 3 is never handed out again
    assert "alpha@2" not in store.snapshot().pending_unloads  # registered again: keep it loaded

    events = store.events()
    assert [e["kind"] for e in events[:2]] == ["adapter.registered", "adapter.removed"]
    assert events[-1]["actor"] == "…min1" and events[-1]["subject"] == "alpha"


def test_conflicts_change_nothing(plane: ControlPlane) -> None:
    store = plane.registry
    store.add_version(new("alpha", 1), ["prod"], reserved={BASE})
    before = store.snapshot()
    cases = [
        (lambda: store.add_version(new("alpha", 1), reserved={BASE}), "version_exists", "version"),
        (lambda: store.add_version(new(BASE, 1), reserved={BASE}), "name_taken", "name"),
        (lambda: store.add_version(new("prod", 1), reserved={BASE}), "name_taken", "name"),
        (lambda: store.add_version(new("beta", 1), ["alpha"], reserved={BASE}), "name_taken", "aliases"),
        (lambda: store.add_version(new("beta", 1), ["beta"], reserved={BASE}), "name_taken", "aliases"),
        (lambda: store.set_alias("alpha", "alpha@1", reserved={BASE}), "name_taken", "alias"),
        (lambda: store.set_alias(BASE, "alpha@1", reserved={BASE}), "name_taken", "alias"),
        (lambda: store.remove("alpha"), "adapter_in_use", "name"),
    ]
    for call, code, param in cases:
        with pytest.raises(RecordConflictError) as info:
            call()
        assert (info.value.code, info.value.param) == (code, param)
    for call, code, param in [
        (lambda: store.set_alias("x", "nope@1"), "adapter_not_found", "target"),
        (lambda: store.remove("nope"), "adapter_not_found", "name"),
        (lambda: store.remove("alpha@7"), "adapter_not_found", "name"),
        (lambda: store.delete_alias("nope"), "alias_not_found", "alias"),
    ]:
        with pytest.raises(RecordNotFoundError) as info:
            call()
        assert (info.value.code, info.value.param) == (code, param)
    after = store.snapshot()
    assert (after.adapters, after.aliases) == (before.adapters, before.aliases)
    # A failed change never reaches the history either.
    assert [e["kind"] for e in store.events()] == ["adapter.registered", "alias.set"]


def test_alias_switch_force_remove_and_delete(plane: ControlPlane) -> None:
    store = plane.registry
    store.add_version(new("alpha", 1), reserved={BASE})
    store.add_version(new("alpha", 2), reserved={BASE})
    record, change = store.set_alias("prod", "alpha", "handbook")
    assert (
        record.target == "alpha@2" and record.default_collection == "handbook"
    )  # resolved now, not floating
    store.add_version(new("alpha", 3), reserved={BASE})
    assert store.snapshot().aliases["prod"].target == "alpha@2"
    store.set_alias("prod", "alpha@1")
    assert store.snapshot().aliases["prod"].default_collection is None
    removal = store.remove("alpha", force=True)
    assert [v.ref for v in removal.versions] == ["alpha@1", "alpha@2", "alpha@3"]
    assert removal.aliases == ["prod"]
    snap = store.snapshot()
    assert snap.adapters == {} and snap.aliases == {}
    assert set(snap.pending_unloads) == {"alpha@1", "alpha@2", "alpha@3"}
    store.unloaded(["alpha@1", "alpha@2", "alpha@3"])
    assert store.snapshot().pending_unloads == {}
    # The name is free again: an alias may now take it.
    store.add_version(new("beta", 1), reserved={BASE})
    store.set_alias("alpha", "beta@1")
    assert store.delete_alias("alpha") > change


def test_concurrent_registrations_of_one_name(plane: ControlPlane) -> None:
    """Eight writers race for alpha@1..4: each version is recorded once, ids are unique, the losers get 409."""
    outcomes: list[str] = []
    lock = threading.Lock()

    def writer(i: int) -> None:
        try:
            v, _ = plane.registry.add_version(new("alpha", 1 + i % 4), reserved={BASE})
            result = f"ok {v.ref} {v.id}"
        except RecordConflictError as exc:
            result = f"conflict {exc.code}"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ok = [o for o in outcomes if o.startswith("ok")]
    assert len(ok) == 4 and outcomes.count("conflict version_exists") == 4
    snap = plane.registry.snapshot()
    assert sorted(snap.adapters["alpha"]) == [1, 2, 3, 4]
    assert len({v.id for v in snap.versions()}) == 4
