"""Bodies of the operations endpoints."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

ReplicaStateName = Literal["ready", "syncing", "unhealthy"]


class ReplicaReadiness(BaseModel):
    """One replica in ``/ready``: its state only (no URL, no error text: ``/ready`` needs no key)."""

    replica: int
    state: ReplicaStateName
    ready: bool


class ReadyStatus(BaseModel):
    """``GET /ready``: 200 when at least one replica serves, else 503 with the same body."""

    status: Literal["ready", "not_ready"]
    ready_replicas: int
    replicas: list[ReplicaReadiness]


class ReplicaPublic(BaseModel):
    """One engine replica as this gateway sees it."""

    object: Literal["replica"] = "replica"
    replica: int
    url: str
    state: ReplicaStateName
    """``ready`` serves requests; ``syncing`` answers but the registry is not applied yet; ``unhealthy`` is down,
    starting or unreachable."""
    healthy: bool
    ready: bool
    outstanding: int
    """Requests this gateway has in flight on it."""
    adapters: list[str] = Field(default_factory=list)
    """Engine LoRA names it reported holding at the last probe (``name@version``)."""
    failed_adapters: dict[str, str] = Field(default_factory=dict)
    """Registered adapters it could not load, with the reason."""
    restarts: int
    embedded: bool
    """Started and supervised by this gateway (else an external ``engine.urls`` replica)."""
    error: str | None = None


class ReplicaList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ReplicaPublic]


class LoadStatus(BaseModel):
    """``GET /load``: the interactive requests this gateway serves now (what evaluation workers yield to)."""

    interactive_in_flight: int = Field(description="Chat, completion and retrieve requests in flight")
    idle_s: float | None = Field(
        description="Seconds since the last one ended (0 while one is in flight; null: none since start)"
    )
