"""Request and response bodies of ``/v1/adapters`` and ``/v1/aliases``."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]


class AdapterCreate(BaseModel):
    """Register (and load everywhere) one adapter version."""

    model_config = ConfigDict(extra="forbid")

    name: Name
    path: str = Field(min_length=1, max_length=4096)
    """Adapter directory, absolute or relative to the first of ``server.adapter_roots``; must lie under one."""
    version: int | None = Field(default=None, ge=1)
    """Defaults to the latest version + 1."""
    aliases: list[Name] = Field(default_factory=list, max_length=16)
    """Aliases to point at this version once it is loaded."""
    default_collection: str | None = Field(default=None, min_length=1, max_length=128)
    """Retrieval collection used to ground requests to this adapter when they carry no ``rag`` options."""


class ReplicaAdapterState(BaseModel):
    replica: int
    url: str
    state: Literal["loaded", "missing", "failed", "down"]
    error: str | None = None


class AdapterPublic(BaseModel):
    object: Literal["adapter"] = "adapter"
    id: int
    name: str
    version: int
    model: str
    """What to put in a request's ``model`` to pin this version (``name@version``)."""
    latest: bool
    path: str
    rank: int
    target_modules: list[str]
    base_check: str
    default_collection: str | None = None
    aliases: list[str] = Field(default_factory=list)
    created_at: str
    replicas: list[ReplicaAdapterState] = Field(default_factory=list)


class AdapterList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AdapterPublic]


class AdapterDeleted(BaseModel):
    object: Literal["adapter.deleted"] = "adapter.deleted"
    deleted: list[str]
    removed_aliases: list[str] = Field(default_factory=list)


MAX_TARGETS = 8


class AliasTargetPublic(BaseModel):
    """One target of a weighted alias."""

    model_config = ConfigDict(extra="forbid")

    target: str = Field(min_length=1, max_length=200)
    """``name@version``, or ``name`` for its current latest version (resolved now, not floating)."""
    weight: int = Field(ge=1, le=100)
    """Percent of the alias's traffic (integers; an alias's weights sum to 100)."""


class AliasUpdate(BaseModel):
    """Point an alias at one adapter version or at several with weights (a canary split).

    Atomic: each request sees the old or the new targets, never a mix. Give ``target`` (weight 100) or
    ``targets`` (weights summing to 100), not both.
    """

    model_config = ConfigDict(extra="forbid")

    target: str | None = Field(default=None, min_length=1, max_length=200)
    """``name@version``, or ``name`` for its current latest version (resolved now, not floating)."""
    targets: list[AliasTargetPublic] | None = Field(default=None, min_length=1, max_length=MAX_TARGETS)
    """Weighted targets, e.g. ``[{"target": "acme@2", "weight": 90}, {"target": "acme@3", "weight": 10}]``."""
    default_collection: str | None = Field(default=None, min_length=1, max_length=128)
    reason: str | None = Field(default=None, max_length=500)
    """Why (kept in the alias's history with who and when)."""

    @field_validator("targets")
    @classmethod
    def _split(cls, targets: list[AliasTargetPublic] | None) -> list[AliasTargetPublic] | None:
        if targets is not None:
            refs = [t.target for t in targets]
            if len(set(refs)) != len(refs):
                raise ValueError("`targets` names the same target twice")
            total = sum(t.weight for t in targets)
            if total != 100:
                raise ValueError(f"`targets` weights must sum to 100, not {total}")
        return targets

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        if (self.target is None) == (self.targets is None):
            raise ValueError("give either `target` or `targets`")
        return self

    def split(self) -> str | list[tuple[str, int]]:
        """What the registry takes: one ref, or ``[(ref, weight), ...]``."""
        if self.targets is None:
            assert self.target is not None
            return self.target
        return [(t.target, t.weight) for t in self.targets]


class ShadowUpdate(BaseModel):
    """Mirror a share of an alias's chat requests to a candidate version; the user never gets its answers, the
    shadow capture keeps both (prompts included: see docs/serving.md, Shadow traffic)."""

    model_config = ConfigDict(extra="forbid")

    candidate: str = Field(min_length=1, max_length=200)
    """``name@version``, or ``name`` for its current latest version (resolved now)."""
    percent: int = Field(default=10, ge=1, le=100)
    """Share of the alias's chat requests to mirror."""
    reason: str | None = Field(default=None, max_length=500)


class ShadowPublic(BaseModel):
    candidate: str
    """``name@version`` that answers the mirrored requests."""
    percent: int


class AliasPublic(BaseModel):
    object: Literal["alias"] = "alias"
    alias: str
    target: str
    """The target with the largest weight (the only one of a plain alias)."""
    targets: list[AliasTargetPublic] = Field(default_factory=list)
    """Every target with its weight, largest first."""
    default_collection: str | None = None
    shadow: ShadowPublic | None = None
    """The shadow candidate, when one is set."""
    updated_at: str


class AliasRollback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=500)


class AliasChangePublic(BaseModel):
    """One recorded change of an alias: who, when, old → new targets, why (a promotion adds its decision)."""

    object: Literal["alias.change"] = "alias.change"
    id: int
    at: str
    change: int
    actor: str | None = None
    kind: str
    """``alias.set``, ``alias.rollback``, ``alias.promoted``, ``alias.deleted``, ``alias.shadow_set``,
    ``alias.shadow_cleared`` or a promotion's ``alias.promotion_rejected`` / ``_reverted`` / ``_failed``."""
    old: list[dict[str, Any]]
    new: list[dict[str, Any]]
    reason: str | None = None
    old_default_collection: str | None = None
    default_collection: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class AliasHistory(BaseModel):
    object: Literal["list"] = "list"
    alias: str
    data: list[AliasChangePublic]


class AliasList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AliasPublic]
