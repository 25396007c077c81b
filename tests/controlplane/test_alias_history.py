"""Weighted aliases, their history and rollback in the registry's transactions (SQLite and PostgreSQL): every
change records who, when, old → new and why; a rollback returns atomically to the previous target set; bad
weights and stale rollbacks change nothing."""

from __future__ import annotations

import pytest

from controlplane import ControlPlane, NewVersion, RecordConflictError, RecordNotFoundError

BASE = "base-model"


def new(name: str, version: int) -> NewVersion:
    return NewVersion(
        name=name,
        version=version,
        path=f"/adapters/{name}-{version}",
        rank=8,
        target_modules=["q_proj"],
        base_check="manifest",
        default_collection=None,
    )


def weights(plane: ControlPlane, alias: str) -> dict[str, int]:
    return {t.ref: t.weight for t in plane.registry.snapshot().aliases[alias].targets}


def test_weighted_alias_history_and_rollback(plane: ControlPlane) -> None:
    store = plane.registry
    for v in (1, 2, 3):
        store.add_version(new("acme", v), reserved={BASE})
    store.set_alias("bot", "acme@1", actor="…aaaa", reason="launch")
    record, _ = store.set_alias("bot", [("acme@2", 90), ("acme@3", 10)], actor="…bbbb", reason="canary")
    assert record.target == "acme@2" and [(t.ref, t.weight) for t in record.targets] == [
        ("acme@2", 90),
        ("acme@3", 10),
    ]
    assert weights(plane, "bot") == {"acme@2": 90, "acme@3": 10}

    history = store.alias_history("bot")
    assert [h.kind for h in history] == ["alias.set", "alias.set"]
    assert history[0].old == [{"target": "acme@1", "weight": 100}]
    assert history[0].new == [{"target": "acme@2", "weight": 90}, {"target": "acme@3", "weight": 10}]
    assert (history[0].actor, history[0].reason, history[1].old) == ("…bbbb", "canary", [])

    back, _ = store.rollback_alias("bot", actor="…cccc")
    assert back.target == "acme@1" and weights(plane, "bot") == {"acme@1": 100}
    latest = store.alias_history("bot")[0]
    assert latest.kind == "alias.rollback" and latest.actor == "…cccc"
    assert latest.details["rolled_back"] == history[0].id
    # Rolling back a rollback returns to the canary split.
    store.rollback_alias("bot")
    assert weights(plane, "bot") == {"acme@2": 90, "acme@3": 10}


def test_bad_splits_and_impossible_rollbacks_change_nothing(plane: ControlPlane) -> None:
    store = plane.registry
    store.add_version(new("acme", 1), reserved={BASE})
    store.add_version(new("acme", 2), reserved={BASE})
    store.set_alias("bot", "acme@1")
    with pytest.raises(RecordConflictError) as info:
        store.rollback_alias("bot")  # a new alias has nothing to return to
    assert info.value.code == "no_previous_target"
    before = store.snapshot()
    for split, code in [
        ([("acme@1", 60), ("acme@2", 30)], "invalid_weights"),  # sums to 90
        ([("acme@1", 100), ("acme@2", 0)], "invalid_weights"),
        ([("acme@2", 50), ("acme@2", 50)], "invalid_weights"),
        ([("acme", 50), ("acme@2", 50)], "duplicate_target"),  # `acme` is acme@2 now
    ]:
        with pytest.raises(RecordConflictError) as info:
            store.set_alias("bot", split)
        assert info.value.code == code, split
    with pytest.raises(RecordNotFoundError) as missing:
        store.set_alias("bot", [("acme@1", 50), ("acme@9", 50)])
    assert missing.value.param == "targets.1.target"
    with pytest.raises(RecordNotFoundError):
        store.rollback_alias("nope")
    after = store.snapshot()
    assert after.aliases == before.aliases and len(store.alias_history("bot")) == 1

    # A version the previous split used was removed: the rollback refuses instead of half-applying.
    store.set_alias("bot", [("acme@1", 80), ("acme@2", 20)])
    store.set_alias("bot", "acme@2")
    store.remove("acme@1")
    with pytest.raises(RecordNotFoundError):
        store.rollback_alias("bot")
    assert weights(plane, "bot") == {"acme@2": 100}


def test_removing_one_target_renormalises_the_split(plane: ControlPlane) -> None:
    store = plane.registry
    for v in (1, 2, 3):
        store.add_version(new("acme", v), reserved={BASE})
    store.set_alias("bot", [("acme@1", 50), ("acme@2", 30), ("acme@3", 20)])
    store.remove("acme@1", force=True)
    assert weights(plane, "bot") == {"acme@2": 60, "acme@3": 40}
    latest = store.alias_history("bot")[0]
    assert latest.reason == "acme@1 removed" and len(latest.old) == 3 and len(latest.new) == 2


def test_shadow_is_recorded_survives_alias_changes_and_goes_with_its_version(plane: ControlPlane) -> None:
    store = plane.registry
    for v in (1, 2, 3):
        store.add_version(new("acme", v), reserved={BASE})
    store.set_alias("bot", "acme@1", reason="launch")
    record, _ = store.set_shadow("bot", "acme@2", 25, actor="…aaaa", reason="try v2")
    assert record.shadow is not None and (record.shadow.ref, record.shadow.percent) == ("acme@2", 25)
    assert store.snapshot().aliases["bot"].shadow == record.shadow
    latest = store.alias_history("bot")[0]
    assert latest.kind == "alias.shadow_set" and latest.old == latest.new == [
        {"target": "acme@1", "weight": 100}
    ]
    assert latest.details["shadow"] == {"candidate": "acme@2", "percent": 25}
    assert latest.details["old_shadow"] is None and latest.actor == "…aaaa"

    # Refused, nothing changed: a version that already serves, an unknown one, a bad share, an unknown alias.
    with pytest.raises(RecordConflictError) as serving:
        store.set_shadow("bot", "acme@1", 10)
    assert serving.value.code == "already_target"
    with pytest.raises(RecordNotFoundError):
        store.set_shadow("bot", "acme@9", 10)
    with pytest.raises(RecordConflictError):
        store.set_shadow("bot", "acme@3", 0)
    with pytest.raises(RecordNotFoundError):
        store.set_shadow("nobody", "acme@3", 10)
    assert store.snapshot().aliases["bot"].shadow == record.shadow

    # Moving the alias keeps the shadow; a rollback undoes the move, not the shadow (which moved nothing).
    store.set_alias("bot", [("acme@1", 50), ("acme@3", 50)], reason="canary v3")
    assert store.snapshot().aliases["bot"].shadow == record.shadow
    store.rollback_alias("bot")
    assert (
        weights(plane, "bot") == {"acme@1": 100} and store.snapshot().aliases["bot"].shadow == record.shadow
    )
    # Changing the share updates it in place; removing the candidate removes the shadow, recorded.
    store.set_shadow("bot", "acme@2", 60)
    assert store.snapshot().aliases["bot"].shadow.percent == 60  # type: ignore[union-attr]
    store.remove("acme@2", actor="…bbbb")
    assert store.snapshot().aliases["bot"].shadow is None
    cleared = store.alias_history("bot")[0]
    assert cleared.kind == "alias.shadow_cleared" and cleared.reason == "acme@2 removed"
    assert cleared.details["old_shadow"] == {"candidate": "acme@2", "percent": 60}
    with pytest.raises(RecordNotFoundError) as none:
        store.set_shadow("bot", None)
    assert none.value.code == "shadow_not_found"
    # Set and stopped explicitly.
    store.set_shadow("bot", "acme@3", 5)
    stopped, _ = store.set_shadow("bot", None, reason="enough data")
    assert stopped.shadow is None and store.alias_history("bot")[0].kind == "alias.shadow_cleared"
