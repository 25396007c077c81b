"""Gateway settings (``RAGSWAP_SERVER__*``) and evaluation worker settings (``RAGSWAP_WORKER__*``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from ragswap import ragswap_home


@dataclass(frozen=True)
class TokenLimits:
    """How many tokens one completion may generate, for one caller (see :meth:`ServerSettings.token_limits`)."""

    default_max_tokens: int | None
    max_tokens_limit: int | None


class KeyTokenLimits(BaseModel):
    """Token limits of one API key, replacing the server-wide ones for requests made with it."""

    model_config = ConfigDict(extra="forbid")

    key: SecretStr
    """An entry of ``api_keys`` or ``admin_keys``."""
    default_max_tokens: int | None = Field(default=None, ge=1)
    """``None``: the server's ``default_max_tokens``."""
    max_tokens_limit: int | None = Field(default=None, ge=1)
    """``None``: the server's ``max_tokens_limit``."""


class ServerSettings(BaseModel):
    """The OpenAI-compatible gateway."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    api_keys: list[SecretStr] = Field(default_factory=list)
    """Bearer tokens allowed to call the API. With none configured the server only binds to loopback."""
    admin_keys: list[SecretStr] = Field(default_factory=list)
    """Bearer tokens that may also change adapters and collections."""
    state_dir: Path = Field(default_factory=lambda: ragswap_home() / "state")
    """This gateway's local files: the embedded control-plane database (unless ``database_url`` is set), the
    embedded collections (unless ``retrieval.url`` is set), engine logs."""
    database_url: SecretStr | None = None
    """Control-plane database (adapter registry, evaluation jobs and traces). Empty: an SQLite file
    ``state_dir/controlplane.db`` (nothing to install, one host). ``postgresql://user:password@host:5432/db``: every
    gateway and worker on it acts as one service. Migrated at start."""
    sync_interval_s: float = Field(default=0.5, gt=0, le=10)
    """How often the gateway polls the control plane's change counter; a change made through another gateway is
    routed by this one at most about this long (plus one snapshot read) later."""
    change_notify: bool = True
    """On PostgreSQL, also ``LISTEN`` for change notifications, so that a change is routed within milliseconds
    instead of at the next poll (polling stays on: a notification lost on a dropped connection costs one interval)."""
    heartbeat_s: float = Field(default=2.0, gt=0, le=60)
    """How often the gateway records that it is alive and what it still drains; one silent for 3 heartbeats
    (plus one sync interval) is taken for dead, so removals stop waiting for it."""
    lock_timeout_s: float = Field(default=30.0, gt=0)
    """Longest a registration or removal waits for the engines' locks (held by another gateway's change or
    reconciliation) before answering 503."""
    adapter_roots: list[Path] = Field(default_factory=lambda: [ragswap_home() / "adapters"])
    """Adapters can only be registered from directories under these roots."""
    log_prompts: bool = False
    """Log prompt and completion text (off by default: prompts are user data)."""
    shadow_dir: Path | None = None
    """Where shadow captures go (prompts and both versions' answers, one JSONL file per alias, version pair and
    gateway process); written only while an admin has a shadow set on an alias. Default ``state_dir/shadow``;
    behind several gateways put it on shared storage to score every gateway's capture."""
    shadow_max_in_flight: int = Field(default=4, ge=1, le=256)
    """Mirrored requests this gateway runs at once; a request that would exceed it is not mirrored (counted as
    ``dropped``), so a shadow never queues work behind the traffic users wait for."""
    max_request_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    """Larger request bodies are refused with 413 before they are read."""
    request_timeout_s: float = Field(default=600.0, gt=0)
    """Longest a single proxied engine request may take (connect, read and stream)."""
    health_interval_s: float = Field(default=2.0, gt=0)
    """How often replicas are probed; a restarted or new replica gets the registry re-applied on the next probe."""
    drain_timeout_s: float = Field(default=30.0, ge=0)
    """On adapter removal, wait this long for in-flight requests on it before unloading it from the engines."""
    default_max_tokens: int | None = Field(default=1024, ge=1)
    """``max_tokens`` of requests that set none, so that one forgotten limit cannot occupy an engine for minutes.
    The engine still shortens it to what fits the context, so it never fails a request with a long prompt.
    ``None``: up to the context length."""
    max_tokens_limit: int | None = Field(default=None, ge=1)
    """Largest ``max_tokens`` / ``max_completion_tokens`` a request may ask for (400 above it, naming the
    parameter). ``None``: only the context length bounds it."""
    key_limits: list[KeyTokenLimits] = Field(default_factory=list)
    """Per-key overrides of ``default_max_tokens`` / ``max_tokens_limit``."""

    @model_validator(mode="after")
    def _limits_name_known_keys(self) -> Self:
        known = {k.get_secret_value() for k in (*self.api_keys, *self.admin_keys)}
        if any(entry.key.get_secret_value() not in known for entry in self.key_limits):
            raise ValueError("key_limits: every key must also be listed in api_keys or admin_keys")
        return self

    def token_limits(self, key: str | None = None) -> TokenLimits:
        """The limits for a request made with ``key``: the server's, overridden by the key's own entry; the
        default never exceeds the limit."""
        default, limit = self.default_max_tokens, self.max_tokens_limit
        for entry in self.key_limits:
            if key is not None and entry.key.get_secret_value() == key:
                default = entry.default_max_tokens or default
                limit = entry.max_tokens_limit or limit
        if default is not None and limit is not None:
            default = min(default, limit)
        return TokenLimits(default_max_tokens=default, max_tokens_limit=limit)


class WorkerSettings(BaseModel):
    """Evaluation workers: ``ragswap worker`` processes, and the one a gateway runs itself on the embedded default."""

    model_config = ConfigDict(extra="forbid")

    embedded: Literal["auto", "process", "thread", "off"] = "auto"
    """The worker ``ragswap serve`` runs beside the gateway: ``process`` (a child process at lower CPU priority),
    ``thread`` (a thread of the gateway process, sharing its GIL and its CPU priority), ``off``. ``auto`` = ``process`` on the embedded
    SQLite database (so one command still runs evaluation jobs) and ``off`` on PostgreSQL (run ``ragswap
    worker`` processes)."""
    concurrency: int = Field(default=1, ge=1, le=16)
    """Jobs one worker runs at once (each job already runs ``eval.generation_concurrency`` samples at once)."""
    lease_s: float = Field(default=15.0, ge=1.0)
    """A claimed job's lease, renewed every third of it; a job whose worker stops renewing (it died, or lost the
    database) is taken over by another worker this long after the last renewal and resumes from its traces."""
    poll_interval_s: float = Field(default=1.0, gt=0, le=60)
    """How often an idle worker looks for a queued job."""
    gateway_url: str | None = None
    """Where the worker reaches the platform it evaluates (chat completions, ``/v1/retrieve``, the default judge):
    a gateway, or the load balancer in front of several. Empty: ``server.host:server.port`` (loopback for
    ``0.0.0.0``)."""
    api_key: SecretStr | None = None
    """Bearer key the worker uses on the gateway. Empty: the first ``server.api_keys`` (else admin) key."""
    cpu_priority: Literal["idle", "low", "normal"] = "idle"
    """CPU priority of worker processes: ``idle`` (Linux ``SCHED_IDLE``), ``low`` (nice 10) or ``normal``. A
    thread worker (``embedded: thread``) always runs at the gateway's priority: lowering a thread that holds the
    GIL would stall the gateway with it. On its own this does not protect serving on a virtual machine (measured:
    one ``SCHED_IDLE`` busy process beside the engine still made chats 2.7x slower); ``yield_to_serving`` does."""
    yield_to_serving: bool | None = None
    """Before each sample (and before the summary) wait while the gateway serves interactive requests (chat,
    completions, retrieve; its ``GET /load``), so evaluation on the serving machine does not slow them. Empty:
    on for the worker ``ragswap serve`` runs beside the gateway, off for ``ragswap worker`` processes (give those
    machines of their own, or set it when they share the engine's)."""
    yield_quiet_s: float = Field(default=0.5, ge=0, le=60)
    """How long serving must have been idle before a yielding worker goes on (covers a client's gap between two
    requests)."""
    yield_max_wait_s: float = Field(default=30.0, gt=0, le=3600)
    """Longest a yielding worker waits: under continuous interactive load a job still scores one sample per this
    many seconds."""
    health_port: int | None = Field(default=None, ge=1, le=65535)
    """``ragswap worker`` answers ``GET /health`` (alive) and ``GET /ready`` (database reachable) on this port."""
