"""The adapter registry's records and the transactions that change them.

Every change is one transaction that first bumps the change counter (serialising writers, see
:mod:`controlplane.changes`), re-checks its preconditions against the committed state, writes, and appends a
``registry_events`` row. Readers take a :class:`RegistrySnapshot` (one consistent read) and route by it; the
gateway keeps the latest snapshot in memory, so requests never wait for the database.

All methods are blocking; call them from a worker thread (the gateway does, through
:class:`controlplane.ControlPlane`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, selectinload

from controlplane import changes
from controlplane.clock import iso, read_now
from controlplane.db import Database
from controlplane.errors import RecordConflictError, RecordNotFoundError
from controlplane.models import (
    Adapter,
    AdapterVersionRow,
    Alias,
    AliasShadow,
    AliasTarget,
    IdSequence,
    PendingUnload,
    RegistryEvent,
)

VERSION_IDS = "adapter_version"
"""The ``id_sequences`` row adapter version ids come from."""


@dataclass(frozen=True)
class AdapterVersion:
    """One registered adapter version (``name@version``)."""

    id: int
    """Increasing integer id, never reused."""
    name: str
    version: int
    path: str
    rank: int
    target_modules: list[str]
    base_check: str
    default_collection: str | None
    created_at: str
    """ISO 8601, UTC."""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def engine_name(self) -> str:
        """The LoRA name in the engines (one per version, so versions can be served side by side)."""
        return self.ref


@dataclass(frozen=True)
class AliasTargetRecord:
    ref: str
    """``name@version``."""
    weight: int
    """Percent of the alias's traffic."""


@dataclass(frozen=True)
class ShadowRecord:
    """A candidate that receives a copy of ``percent`` % of an alias's chat requests (answers never returned)."""

    ref: str
    """``name@version``."""
    percent: int


@dataclass(frozen=True)
class AliasRecord:
    target: str
    """The alias's (single, weight 100) target ``name@version``."""
    default_collection: str | None
    updated_at: str
    targets: tuple[AliasTargetRecord, ...] = ()
    shadow: ShadowRecord | None = None


@dataclass(frozen=True)
class RegistrySnapshot:
    """The whole registry as of one change number."""

    change: int = 0
    adapters: dict[str, dict[int, AdapterVersion]] = field(default_factory=dict)
    aliases: dict[str, AliasRecord] = field(default_factory=dict)
    pending_unloads: dict[str, tuple[int, float]] = field(default_factory=dict)
    """Engine adapter name → (the change that removed it, when): removed, not yet unloaded everywhere."""
    read_at: float = 0.0
    """The database's time when the snapshot was read (compare ``pending_unloads`` times with it)."""

    def versions(self) -> list[AdapterVersion]:
        return sorted((v for vs in self.adapters.values() for v in vs.values()), key=lambda v: v.id)

    def engine_names(self) -> set[str]:
        return {v.engine_name for vs in self.adapters.values() for v in vs.values()}

    def latest(self, name: str) -> AdapterVersion | None:
        versions = self.adapters.get(name)
        return versions[max(versions)] if versions else None

    def get(self, ref: str) -> AdapterVersion | None:
        """``name`` (its latest version) or ``name@version``."""
        name, sep, ver = ref.partition("@")
        if not sep:
            return self.latest(name)
        if not ver.isdigit():
            return None
        return self.adapters.get(name, {}).get(int(ver))


@dataclass(frozen=True)
class NewVersion:
    """A validated adapter version to record (the engines already hold it)."""

    name: str
    version: int
    path: str
    rank: int
    target_modules: list[str]
    base_check: str
    default_collection: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Removal:
    versions: list[AdapterVersion]
    aliases: list[str]
    """Aliases removed with them (``force``)."""
    change: int


@dataclass(frozen=True)
class AliasChange:
    """One recorded change of an alias (its history): who, when, old → new, why."""

    id: int
    """The history event's id (increasing)."""
    at: str
    """ISO 8601, UTC."""
    change: int
    """The registry change number it was part of."""
    actor: str | None
    """The API key hint (``…abcd``) or worker that made it."""
    kind: str
    """``alias.set``, ``alias.rollback``, ``alias.promoted``, ``alias.deleted``, ``alias.shadow_set`` or
    ``alias.shadow_cleared`` (and a promotion's ``alias.promotion_*`` decisions)."""
    old: list[dict[str, Any]]
    """The target set before: ``[{"target": "name@version", "weight": 90}, ...]`` (empty: a new alias)."""
    new: list[dict[str, Any]]
    """The target set after (empty: deleted)."""
    reason: str | None
    old_default_collection: str | None = None
    default_collection: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    """Anything else the event recorded (a promotion's decision: dataset hash, job id, deltas, outcome)."""


_CHANGE_FIELDS = {"old", "new", "reason", "old_default_collection", "default_collection", "target"}


def _alias_change(event: RegistryEvent) -> AliasChange:
    data = dict(event.data or {})
    legacy_target = data.get("target")
    new = data.get("new")
    if new is None:  # written before weighted aliases: one target at 100
        new = [{"target": legacy_target, "weight": 100}] if legacy_target else []
    return AliasChange(
        id=event.id,
        at=iso(event.at),
        change=event.change,
        actor=event.actor,
        kind=event.kind,
        old=list(data.get("old") or []),
        new=list(new),
        reason=data.get("reason"),
        old_default_collection=data.get("old_default_collection"),
        default_collection=data.get("default_collection"),
        details={k: v for k, v in data.items() if k not in _CHANGE_FIELDS},
    )


def _shadow_dict(shadow: ShadowRecord | None) -> dict[str, Any] | None:
    return None if shadow is None else {"candidate": shadow.ref, "percent": shadow.percent}


MAX_ALIAS_TARGETS = 8


def check_weights(targets: Sequence[tuple[str, int]]) -> None:
    """Weighted targets are 1..8 distinct refs with integer weights 1..100 summing to exactly 100.

    Raises:
        RecordConflictError: they are not (the API validates first, so this guards direct callers).
    """
    refs = [ref for ref, _ in targets]
    weights = [weight for _, weight in targets]
    if not 1 <= len(targets) <= MAX_ALIAS_TARGETS:
        problem = f"an alias has 1 to {MAX_ALIAS_TARGETS} targets, not {len(targets)}"
    elif len(set(refs)) != len(refs):
        problem = "alias targets name the same version twice"
    elif any(not 1 <= w <= 100 for w in weights) or sum(weights) != 100:
        problem = f"alias weights must be integers from 1 to 100 summing to 100, not {weights}"
    else:
        return
    raise RecordConflictError(problem, param="targets", code="invalid_weights")


def normalise_weights(weights: Sequence[int]) -> list[int]:
    """Scale positive weights to integers summing to 100 (largest remainder), e.g. after a target was removed."""
    total = sum(weights)
    exact = [w * 100 / total for w in weights]
    shares = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in order[: 100 - sum(shares)]:
        shares[i] += 1
    return [max(1, s) for s in shares]


def _version(row: AdapterVersionRow, name: str) -> AdapterVersion:
    return AdapterVersion(
        id=row.id,
        name=name,
        version=row.version,
        path=row.path,
        rank=row.rank,
        target_modules=list(row.target_modules),
        base_check=row.base_check,
        default_collection=row.default_collection,
        created_at=iso(row.created_at),
        details=dict(row.details or {}),
    )


def allocate_id(session: Session, sequence: str) -> int:
    """The next id of ``sequence`` (in this transaction; never handed out twice)."""
    row = session.get(IdSequence, sequence, with_for_update=True)
    if row is None:
        row = IdSequence(name=sequence, value=0)
        session.add(row)
    row.value += 1
    session.flush()
    return row.value


class RegistryStore:
    """Registry reads and changes on ``db``. Names reserved for the base model are passed in by the caller."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ---- reads -----------------------------------------------------------------------------------------------

    def change(self) -> int:
        with self.db.read() as session:
            return changes.current(session)

    def snapshot(self) -> RegistrySnapshot:
        with self.db.read() as session:
            return self._snapshot(session)

    def _snapshot(self, session: Session) -> RegistrySnapshot:
        change = changes.current(session)
        adapters: dict[str, dict[int, AdapterVersion]] = {}
        refs: dict[int, str] = {}
        rows = session.execute(
            select(AdapterVersionRow, Adapter.name).join(Adapter).order_by(AdapterVersionRow.id)
        ).all()
        for row, name in rows:
            version = _version(row, name)
            adapters.setdefault(name, {})[version.version] = version
            refs[row.id] = version.ref
        aliases: dict[str, AliasRecord] = {}
        for alias in session.scalars(select(Alias).options(selectinload(Alias.targets))).all():
            targets = tuple(
                AliasTargetRecord(ref=refs[t.version_id], weight=t.weight)
                for t in sorted(alias.targets, key=lambda t: (-t.weight, t.version_id))
                if t.version_id in refs
            )
            if not targets:
                continue
            shadow = alias.shadow
            aliases[alias.name] = AliasRecord(
                target=targets[0].ref,
                default_collection=alias.default_collection,
                updated_at=iso(alias.updated_at),
                targets=targets,
                shadow=(
                    ShadowRecord(refs[shadow.version_id], shadow.percent)
                    if shadow is not None and shadow.version_id in refs
                    else None
                ),
            )
        pending = {
            p.engine_name: (p.change, p.requested_at) for p in session.scalars(select(PendingUnload)).all()
        }
        return RegistrySnapshot(
            change=change,
            adapters=adapters,
            aliases=aliases,
            pending_unloads=pending,
            read_at=read_now(session),
        )

    def next_version(self, name: str) -> int:
        """The version number a registration without an explicit one gets: latest + 1."""
        with self.db.read() as session:
            latest = session.scalar(
                select(func.max(AdapterVersionRow.version)).join(Adapter).where(Adapter.name == name)
            )
        return int(latest or 0) + 1

    def events(self, subject: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The newest registry events first (optionally of one adapter name or alias)."""
        with self.db.read() as session:
            query = select(RegistryEvent).order_by(RegistryEvent.id.desc()).limit(limit)
            if subject is not None:
                query = query.where(RegistryEvent.subject == subject)
            return [
                {
                    "id": e.id,
                    "at": iso(e.at),
                    "change": e.change,
                    "actor": e.actor,
                    "kind": e.kind,
                    "subject": e.subject,
                    "data": e.data,
                }
                for e in session.scalars(query).all()
            ]

    # ---- changes ---------------------------------------------------------------------------------------------

    @staticmethod
    def _event(
        session: Session, change: int, now: float, actor: str | None, kind: str, subject: str, **data: Any
    ) -> None:
        session.add(RegistryEvent(at=now, change=change, actor=actor, kind=kind, subject=subject, data=data))

    @staticmethod
    def _latest_alias_event(session: Session, alias: str) -> int | None:
        return session.scalar(
            select(func.max(RegistryEvent.id)).where(
                RegistryEvent.subject == alias, RegistryEvent.kind.like("alias.%")
            )
        )

    @staticmethod
    def _alias_names(session: Session) -> set[str]:
        return set(session.scalars(select(Alias.name)).all())

    @staticmethod
    def _adapter_names(session: Session) -> set[str]:
        return set(session.scalars(select(Adapter.name)).all())

    def add_version(
        self,
        new: NewVersion,
        aliases: Sequence[str] = (),
        *,
        reserved: Collection[str] = (),
        actor: str | None = None,
    ) -> tuple[AdapterVersion, int]:
        """Record a version (and point ``aliases`` at it); returns it with the change number.

        Raises:
            RecordConflictError: the name is reserved or an alias, an alias would shadow a name, or the version exists.
        """
        with self.db.write() as session:
            change = changes.bump(session)
            now = read_now(session)
            alias_names = self._alias_names(session)
            if new.name in reserved or new.name in alias_names:
                raise RecordConflictError(
                    f"`{new.name}` is already a model or alias name", param="name", code="name_taken"
                )
            adapter_names = self._adapter_names(session) | {new.name}
            for alias in aliases:
                if alias in reserved or alias in adapter_names:
                    raise RecordConflictError(
                        f"alias `{alias}` would shadow a model or adapter name",
                        param="aliases",
                        code="name_taken",
                    )
            adapter = session.scalar(select(Adapter).where(Adapter.name == new.name))
            if adapter is None:
                adapter = Adapter(name=new.name, created_at=now)
                session.add(adapter)
                session.flush()
            elif session.scalar(
                select(AdapterVersionRow.id).where(
                    AdapterVersionRow.adapter_id == adapter.id, AdapterVersionRow.version == new.version
                )
            ):
                raise RecordConflictError(
                    f"`{new.name}@{new.version}` is already registered; remove it first or pick another version",
                    param="version",
                    code="version_exists",
                )
            row = AdapterVersionRow(
                id=allocate_id(session, VERSION_IDS),
                adapter_id=adapter.id,
                version=new.version,
                path=new.path,
                rank=new.rank,
                target_modules=list(new.target_modules),
                base_check=new.base_check,
                default_collection=new.default_collection,
                details=dict(new.details),
                created_at=now,
                created_by=actor,
            )
            session.add(row)
            session.flush()
            version = _version(row, new.name)
            # Registered again before a previous removal of the same name@version was unloaded: keep it.
            session.execute(delete(PendingUnload).where(PendingUnload.engine_name == version.engine_name))
            new_targets = [{"target": version.ref, "weight": 100}]
            for alias in aliases:
                _, old, old_collection = self._point_alias(session, alias, [(row.id, 100)], None, now, actor)
                self._event(
                    session,
                    change,
                    now,
                    actor,
                    "alias.set",
                    alias,
                    target=version.ref,
                    old=old,
                    old_default_collection=old_collection,
                    new=new_targets,
                    reason=f"registered {version.ref}",
                )
            self._event(
                session,
                change,
                now,
                actor,
                "adapter.registered",
                new.name,
                ref=version.ref,
                id=version.id,
                path=version.path,
                aliases=list(aliases),
            )
        return version, change

    @staticmethod
    def _targets_of(session: Session, alias: Alias) -> list[dict[str, Any]]:
        """An alias's targets as history records them: ``[{"target": "name@version", "weight": 90}, ...]``."""
        ids = [t.version_id for t in alias.targets]
        refs = {
            vid: f"{name}@{ver}"
            for vid, ver, name in session.execute(
                select(AdapterVersionRow.id, AdapterVersionRow.version, Adapter.name)
                .join(Adapter)
                .where(AdapterVersionRow.id.in_(ids))
            ).all()
        }
        return [
            {"target": refs[t.version_id], "weight": t.weight}
            for t in sorted(alias.targets, key=lambda t: (-t.weight, t.version_id))
            if t.version_id in refs
        ]

    @classmethod
    def _point_alias(
        cls,
        session: Session,
        name: str,
        targets: Sequence[tuple[int, int]],
        default_collection: str | None,
        now: float,
        actor: str | None,
    ) -> tuple[Alias, list[dict[str, Any]], str | None]:
        """Point ``name`` at ``targets`` (version id, weight); returns the row, its previous targets and collection."""
        alias = session.scalar(select(Alias).where(Alias.name == name).options(selectinload(Alias.targets)))
        old: list[dict[str, Any]] = []
        old_collection = None
        if alias is None:
            alias = Alias(name=name, updated_at=now)
            session.add(alias)
        else:
            old, old_collection = cls._targets_of(session, alias), alias.default_collection
        alias.default_collection = default_collection
        alias.updated_at, alias.updated_by = now, actor
        alias.targets = [AliasTarget(version_id=vid, weight=weight) for vid, weight in targets]
        session.flush()
        return alias, old, old_collection

    def remove(self, ref: str, *, force: bool = False, actor: str | None = None) -> Removal:
        """Forget ``name`` (every version) or ``name@version``; the engines unload it once it is drained.

        Raises:
            RecordNotFoundError: nothing registered under ``ref``.
            RecordConflictError: an alias points at it and ``force`` is false.
        """
        name, sep, ver = ref.partition("@")
        with self.db.write() as session:
            change = changes.bump(session)
            now = read_now(session)
            query = select(AdapterVersionRow).join(Adapter).where(Adapter.name == name)
            if sep:
                query = query.where(AdapterVersionRow.version == (int(ver) if ver.isdigit() else -1))
            rows = session.scalars(query.order_by(AdapterVersionRow.version)).all()
            if not rows:
                raise RecordNotFoundError(
                    f"adapter `{ref}` is not registered", param="name", code="adapter_not_found"
                )
            chosen = [_version(row, name) for row in rows]
            ids = {row.id for row in rows}
            refs = sorted(v.ref for v in chosen)
            pinned_aliases = session.scalars(
                select(Alias)
                .join(AliasTarget)
                .where(AliasTarget.version_id.in_(ids))
                .options(selectinload(Alias.targets))
                .distinct()
            ).all()
            shadowed = session.scalars(
                select(Alias)
                .join(AliasShadow)
                .where(AliasShadow.version_id.in_(ids))
                .options(selectinload(Alias.targets))
            ).all()
            pinned = sorted(a.name for a in pinned_aliases)
            if pinned and not force:
                raise RecordConflictError(
                    f"aliases {pinned} point at {refs}; move them first or pass force=true",
                    param="name",
                    code="adapter_in_use",
                )
            for alias in shadowed:  # the database drops the shadow with its version; the history says so
                before = self._shadow_of(session, alias)
                alias.shadow = None
                self._shadow_event(session, change, now, actor, alias, before, None, f"{ref} removed")
            removed_aliases = []
            for alias in pinned_aliases:
                old = self._targets_of(session, alias)
                remaining = [t for t in alias.targets if t.version_id not in ids]
                if remaining:
                    shares = normalise_weights([t.weight for t in remaining])
                    alias.targets = [
                        AliasTarget(version_id=t.version_id, weight=w)
                        for t, w in zip(remaining, shares, strict=True)
                    ]
                    session.flush()
                    self._event(
                        session,
                        change,
                        now,
                        actor,
                        "alias.set",
                        alias.name,
                        target=None,
                        old=old,
                        old_default_collection=alias.default_collection,
                        default_collection=alias.default_collection,
                        new=self._targets_of(session, alias),
                        reason=f"{ref} removed",
                    )
                else:
                    session.delete(alias)
                    removed_aliases.append(alias.name)
                    self._event(
                        session,
                        change,
                        now,
                        actor,
                        "alias.deleted",
                        alias.name,
                        old=old,
                        old_default_collection=alias.default_collection,
                        new=[],
                        reason=f"{ref} removed",
                    )
            session.flush()
            for row, version in zip(rows, chosen, strict=True):
                session.delete(row)
                session.merge(PendingUnload(engine_name=version.engine_name, change=change, requested_at=now))
            session.flush()
            if not session.scalar(
                select(func.count()).select_from(AdapterVersionRow).join(Adapter).where(Adapter.name == name)
            ):
                session.execute(delete(Adapter).where(Adapter.name == name))
            self._event(session, change, now, actor, "adapter.removed", name, refs=refs, force=force)
        return Removal(versions=chosen, aliases=sorted(removed_aliases), change=change)

    def set_alias(
        self,
        alias: str,
        target: str | Sequence[tuple[str, int]],
        default_collection: str | None = None,
        *,
        reserved: Collection[str] = (),
        actor: str | None = None,
        reason: str | None = None,
        kind: str = "alias.set",
        details: Mapping[str, Any] | None = None,
        if_latest: int | None = None,
    ) -> tuple[AliasRecord, int]:
        """Point ``alias`` at one target or at weighted targets, atomically, and record the change in its history.

        Args:
            target: ``name@version`` (or ``name`` = its latest version *now*) at weight 100, or
                ``[(ref, weight), ...]`` with distinct refs and integer weights ≥ 1 summing to 100.
            reason: why (kept in the history with who, when, old → new).
            kind: the history event's kind (``alias.set``; promotions record ``alias.promoted``).
            details: more facts for the history event (a promotion's decision record).
            if_latest: change only if this history event id is still the alias's latest (else a conflict).

        Raises:
            RecordConflictError: ``alias`` is a model or adapter name, or the weights are not a split of 100.
            RecordNotFoundError: a target is not registered.
        """
        wanted = [(target, 100)] if isinstance(target, str) else list(target)
        check_weights(wanted)
        with self.db.write() as session:
            change = changes.bump(session)
            now = read_now(session)
            if alias in reserved or alias in self._adapter_names(session):
                raise RecordConflictError(
                    f"`{alias}` is a model or adapter name", param="alias", code="name_taken"
                )
            if if_latest is not None and self._latest_alias_event(session, alias) != if_latest:
                raise RecordConflictError(
                    f"alias `{alias}` changed meanwhile; look at its history and retry",
                    param="alias",
                    code="alias_changed",
                )
            snapshot = self._snapshot(session)
            chosen: list[tuple[AdapterVersion, int]] = []
            for index, (ref, weight) in enumerate(wanted):
                version = snapshot.get(ref)
                if version is None:
                    raise RecordNotFoundError(
                        f"alias target `{ref}` is not a registered adapter",
                        param="target" if isinstance(target, str) else f"targets.{index}.target",
                        code="adapter_not_found",
                    )
                chosen.append((version, weight))
            if len({v.id for v, _ in chosen}) != len(chosen):
                raise RecordConflictError(
                    "alias targets name the same version twice", param="targets", code="duplicate_target"
                )
            row, old, old_collection = self._point_alias(
                session, alias, [(v.id, w) for v, w in chosen], default_collection, now, actor
            )
            ordered = [AliasTargetRecord(v.ref, w) for v, w in sorted(chosen, key=lambda c: (-c[1], c[0].id))]
            new = [{"target": t.ref, "weight": t.weight} for t in ordered]
            self._event(
                session,
                change,
                now,
                actor,
                kind,
                alias,
                target=ordered[0].ref,
                default_collection=default_collection,
                old=old,
                old_default_collection=old_collection,
                new=new,
                reason=reason,
                **dict(details or {}),
            )
            record = AliasRecord(
                target=ordered[0].ref,
                default_collection=row.default_collection,
                updated_at=iso(now),
                targets=tuple(ordered),
                shadow=self._shadow_of(session, row),
            )
        return record, change

    @staticmethod
    def _shadow_of(session: Session, alias: Alias) -> ShadowRecord | None:
        shadow = alias.shadow
        if shadow is None:
            return None
        version, name = session.execute(
            select(AdapterVersionRow.version, Adapter.name)
            .join(Adapter)
            .where(AdapterVersionRow.id == shadow.version_id)
        ).one()
        return ShadowRecord(f"{name}@{version}", shadow.percent)

    def _shadow_event(
        self,
        session: Session,
        change: int,
        now: float,
        actor: str | None,
        alias: Alias,
        before: ShadowRecord | None,
        after: ShadowRecord | None,
        reason: str | None,
    ) -> list[dict[str, Any]]:
        """Record a shadow change (targets unchanged: old = new, so a rollback never undoes it); returns the
        alias's targets."""
        session.flush()
        targets = self._targets_of(session, alias)
        self._event(
            session,
            change,
            now,
            actor,
            "alias.shadow_set" if after is not None else "alias.shadow_cleared",
            alias.name,
            old=targets,
            new=targets,
            old_default_collection=alias.default_collection,
            default_collection=alias.default_collection,
            old_shadow=_shadow_dict(before),
            shadow=_shadow_dict(after),
            reason=reason,
        )
        return targets

    def set_shadow(
        self,
        alias: str,
        candidate: str | None,
        percent: int = 0,
        *,
        actor: str | None = None,
        reason: str | None = None,
    ) -> tuple[AliasRecord, int]:
        """Mirror ``percent`` % of ``alias``'s chat requests to ``candidate`` (``None``: stop), recorded in the
        alias's history as ``alias.shadow_set`` / ``alias.shadow_cleared`` (targets unchanged: old = new).

        Raises:
            RecordNotFoundError: no such alias, candidate not registered, or (stopping) no shadow to stop.
            RecordConflictError: the candidate already serves the alias, or ``percent`` is not 1..100.
        """
        if candidate is not None and not 1 <= percent <= 100:
            raise RecordConflictError("percent must be 1..100", param="percent", code="invalid_percent")
        with self.db.write() as session:
            change = changes.bump(session)
            now = read_now(session)
            row = session.scalar(
                select(Alias).where(Alias.name == alias).options(selectinload(Alias.targets))
            )
            if row is None:
                raise RecordNotFoundError(
                    f"alias `{alias}` does not exist", param="alias", code="alias_not_found"
                )
            before = self._shadow_of(session, row)
            if candidate is None:
                if row.shadow is None:
                    raise RecordNotFoundError(
                        f"alias `{alias}` has no shadow", param="alias", code="shadow_not_found"
                    )
                row.shadow = None
            else:
                version = self._snapshot(session).get(candidate)
                if version is None:
                    raise RecordNotFoundError(
                        f"shadow candidate `{candidate}` is not a registered adapter",
                        param="candidate",
                        code="adapter_not_found",
                    )
                if version.id in {t.version_id for t in row.targets}:
                    raise RecordConflictError(
                        f"`{version.ref}` already serves `{alias}`: a shadow is a version users do not get",
                        param="candidate",
                        code="already_target",
                    )
                if row.shadow is None:
                    row.shadow = AliasShadow(
                        version_id=version.id, percent=percent, updated_at=now, updated_by=actor
                    )
                else:
                    row.shadow.version_id, row.shadow.percent = version.id, percent
                    row.shadow.updated_at, row.shadow.updated_by = now, actor
            session.flush()
            after = self._shadow_of(session, row)
            targets = self._shadow_event(session, change, now, actor, row, before, after, reason)
            record = AliasRecord(
                target=targets[0]["target"],
                default_collection=row.default_collection,
                updated_at=iso(row.updated_at),
                targets=tuple(AliasTargetRecord(t["target"], int(t["weight"])) for t in targets),
                shadow=after,
            )
        return record, change

    def record_alias_decision(
        self, alias: str, kind: str, *, actor: str | None = None, reason: str | None = None, **data: Any
    ) -> AliasChange:
        """Record a decision about ``alias`` that leaves its targets as they are (a rejected promotion)."""
        with self.db.write() as session:
            row = session.scalar(
                select(Alias).where(Alias.name == alias).options(selectinload(Alias.targets))
            )
            targets = self._targets_of(session, row) if row is not None else []
            event = RegistryEvent(
                at=read_now(session),
                change=changes.current(session),
                actor=actor,
                kind=kind,
                subject=alias,
                data={"old": targets, "new": targets, "reason": reason, **data},
            )
            session.add(event)
            session.flush()
            return _alias_change(event)

    def alias_history(self, alias: str, limit: int = 100) -> list[AliasChange]:
        """The changes of ``alias``, newest first (including those before it was deleted and set again)."""
        with self.db.read() as session:
            query = (
                select(RegistryEvent)
                .where(RegistryEvent.subject == alias, RegistryEvent.kind.like("alias.%"))
                .order_by(RegistryEvent.id.desc())
                .limit(limit)
            )
            return [_alias_change(e) for e in session.scalars(query).all()]

    def rollback_alias(
        self,
        alias: str,
        *,
        reserved: Collection[str] = (),
        actor: str | None = None,
        reason: str | None = None,
    ) -> tuple[AliasRecord, int]:
        """Return ``alias`` to the target set it had before its latest change, atomically (one transaction).

        Rolling back twice returns to where the first rollback started (the latest change is the rollback).

        Raises:
            RecordNotFoundError: no such alias, or a version it pointed at was removed since.
            RecordConflictError: its history records no earlier target set.
        """
        history = self.alias_history(alias, limit=100)
        with self.db.read() as session:
            exists = session.scalar(select(Alias.id).where(Alias.name == alias)) is not None
        if not exists:
            raise RecordNotFoundError(
                f"alias `{alias}` does not exist", param="alias", code="alias_not_found"
            )
        # Decisions that moved nothing (a rejected promotion) are skipped: the rollback undoes the latest move.
        moves = [h for h in history if h.old != h.new]
        if not moves or not moves[0].old:
            raise RecordConflictError(
                f"alias `{alias}` has no earlier target set to return to",
                param="alias",
                code="no_previous_target",
            )
        last = moves[0]
        try:
            return self.set_alias(
                alias,
                [(t["target"], int(t["weight"])) for t in last.old],
                last.old_default_collection,
                reserved=reserved,
                actor=actor,
                reason=reason or f"rollback of change {last.change}",
                kind="alias.rollback",
                details={"rolled_back": last.id},
                if_latest=history[0].id,
            )
        except RecordNotFoundError as exc:
            raise RecordNotFoundError(
                f"cannot roll `{alias}` back: {exc.message} any more", param="alias", code=exc.code
            ) from exc

    def delete_alias(self, alias: str, *, actor: str | None = None) -> int:
        """Remove an alias; returns the change number.

        Raises:
            RecordNotFoundError: no such alias.
        """
        with self.db.write() as session:
            change = changes.bump(session)
            now = read_now(session)
            row = session.scalar(select(Alias).where(Alias.name == alias))
            if row is None:
                raise RecordNotFoundError(
                    f"alias `{alias}` does not exist", param="alias", code="alias_not_found"
                )
            session.delete(row)
            self._event(session, change, now, actor, "alias.deleted", alias)
        return change

    def pending_unloads(self) -> dict[str, tuple[int, float]]:
        """Engine adapter names that engines may hold but must not (see :meth:`guard_load`, :meth:`remove`)."""
        with self.db.read() as session:
            return {
                p.engine_name: (p.change, p.requested_at)
                for p in session.scalars(select(PendingUnload)).all()
            }

    def guard_load(self, engine_name: str) -> None:
        """Note that ``engine_name`` is about to be loaded on the engines *before* it is recorded.

        Recording it (:meth:`add_version`) clears the note; if the registering gateway dies in between, the note
        tells the next reconciler to unload the adapter the engines were left holding.
        """
        with self.db.write() as session:
            session.merge(PendingUnload(engine_name=engine_name, change=0, requested_at=read_now(session)))

    def unloaded(self, engine_names: Collection[str]) -> None:
        """Removed versions that no engine holds any more: forget their pending unloads."""
        if not engine_names:
            return
        with self.db.write() as session:
            session.execute(delete(PendingUnload).where(PendingUnload.engine_name.in_(list(engine_names))))
