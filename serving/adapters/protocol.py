"""Request and response bodies of ``/v1/adapters`` and ``/v1/aliases``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

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


class AliasUpdate(BaseModel):
    """Point an alias at an adapter version (atomically: each request sees the old or the new target)."""

    model_config = ConfigDict(extra="forbid")

    target: str = Field(min_length=1, max_length=200)
    """``name@version``, or ``name`` for its current latest version (resolved now, not floating)."""
    default_collection: str | None = Field(default=None, min_length=1, max_length=128)


class AliasPublic(BaseModel):
    object: Literal["alias"] = "alias"
    alias: str
    target: str
    default_collection: str | None = None
    updated_at: str


class AliasList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AliasPublic]
