"""The gateway's view of its vLLM replicas: health, loaded adapters, outstanding requests, replica choice.

Replicas come from ``engine.urls`` or, when that is empty, are started here as embedded
:class:`~serving.engine.process.EngineProcess` children. A background loop probes each replica's ``/v1/models``
(which lists the LoRA adapters it holds); a replica that comes (back) up or lost adapters (an engine restart)
gets the registry re-applied through :attr:`EnginePool.reconciler` (``serving.engine.reconcile``) and serves once
it holds the registered adapters.

A replica that dies stops being chosen at once, not at the next probe: each embedded engine process is watched
(:meth:`~serving.engine.process.EngineProcess.wait_exited`, woken by the kernel the moment it exits), its
process group is killed (no orphaned ``EngineCore``/``Worker``) and it is restarted, with a backoff when it keeps
dying during start-up; a replica that refuses a connection (an external one that went away) is marked down by the
proxy through :meth:`EnginePool.mark_down` and probed again right away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from ragswap import Settings
from serving.engine.admission import SlotAdmission, prefer
from serving.engine.process import EngineProcess
from serving.errors import BadRequestError, EngineError, GatewayError, NotFoundError, ServiceUnavailableError
from serving.ops.metrics import GatewayMetrics

logger = logging.getLogger(__name__)

ReplicaState = Literal["ready", "syncing", "unhealthy"]
_STARTUP_GRACE_S = 120.0
"""An engine that dies sooner than this after its start is restarted with an exponential backoff."""
_MAX_BACKOFF_S = 60.0
_DOWN_PROBE_S = 1.0
"""Probe period while a replica is down (the configured interval applies to healthy ones)."""


@dataclass
class Replica:
    """One vLLM OpenAI server."""

    index: int
    url: str
    process: EngineProcess | None = None
    healthy: bool = False
    in_sync: bool = False
    """It held the registered adapters when last reconciled (by any gateway) since it came up."""
    base_id: str | None = None
    """The engine's own name for the base model (``--served-model-name``)."""
    loaded: set[str] = field(default_factory=set)
    """Engine LoRA names it reports as loaded."""
    outstanding: int = 0
    last_error: str | None = None
    restarts: int = 0
    failed_adapters: dict[str, str] = field(default_factory=dict)
    """Engine LoRA name → why it could not be loaded here."""
    downs: int = 0
    """How often it was marked down; a probe that started before the last time does not count."""
    admission: SlotAdmission | None = None
    """Keeps the adapters in flight here within the engine's LoRA slots (``engine.adapter_admission``)."""

    @property
    def ready(self) -> bool:
        return self.healthy and self.in_sync

    @property
    def state(self) -> ReplicaState:
        """``ready`` serves; ``syncing`` answers but the registry is not applied yet; ``unhealthy`` is down,
        starting or unreachable."""
        return "ready" if self.ready else "syncing" if self.healthy else "unhealthy"


Reconciler = Callable[[Replica], Awaitable[bool]]
"""Brings a replica to the registered adapters; returns whether it holds them now."""


def engine_error(status: int, body: bytes | str, what: str) -> GatewayError:
    """Turn an engine's error reply into a domain error: its 4xx stay client errors, the rest is a 502."""
    message = body.decode(errors="replace") if isinstance(body, bytes) else body
    param: str | None = None
    try:
        import json

        info = json.loads(message)
        err = info.get("error", info) if isinstance(info, dict) else {}
        if isinstance(err, dict):
            message = str(err.get("message") or message)
            param = err.get("param")
    except ValueError:
        pass
    message = message.strip()[:2000] or f"HTTP {status}"
    if status == 404:
        return NotFoundError(f"{what}: {message}", param=param, code="engine_not_found")
    if 400 <= status < 500:
        return BadRequestError(f"{what}: {message}", param=param, status_code=status, code="engine_rejected")
    return EngineError(f"{what}: engine answered {status}: {message}", code="engine_error")


class EnginePool:
    """All replicas, their probing and supervision, and the replica choice for each request."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient, metrics: GatewayMetrics) -> None:
        self.settings = settings
        self.http = http
        self.metrics = metrics
        self.replicas: list[Replica] = []
        self.reconciler: Reconciler | None = None
        self.desired: Callable[[], set[str]] = set
        """Engine LoRA names every replica should hold (set by the registry)."""
        self._task: asyncio.Task[None] | None = None
        self._watchers: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._reconciling: dict[int, asyncio.Task[None]] = {}

    # ---- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        engine = self.settings.engine
        if engine.urls:
            self.replicas = [Replica(index=i, url=url) for i, url in enumerate(engine.urls)]
        else:
            from ragswap import resolve_model

            model_path = await asyncio.to_thread(
                resolve_model, self.settings.models.base_model, self.settings.models
            )
            log_dir = self.settings.server.state_dir / "logs"
            for i in range(engine.replicas):
                proc = EngineProcess(
                    engine,
                    model_path,
                    self.settings.models.base_model,
                    replica=i,
                    log_path=log_dir / f"engine-{i}.log",
                )
                proc.start()  # on the loop thread: the engine's lifeline is tied to the thread that starts it
                replica = Replica(index=i, url=proc.url, process=proc)
                self.replicas.append(replica)
                self._watchers.append(asyncio.create_task(self._watch(replica), name=f"engine-watch-{i}"))
        if engine.adapter_admission:
            for replica in self.replicas:
                replica.admission = SlotAdmission(
                    engine.max_loras, engine.max_cpu_loras, engine.adapter_max_wait_s
                )
        await self.probe_all()
        self._task = asyncio.create_task(self._health_loop(), name="ragswap-health")

    async def stop(self) -> None:
        for task in [*self._watchers, *([self._task] if self._task else [])]:
            task.cancel()
        await asyncio.gather(*self._watchers, *([self._task] if self._task else []), return_exceptions=True)
        for task in list(self._reconciling.values()):
            task.cancel()
        for replica in self.replicas:
            if replica.process is not None:
                await asyncio.to_thread(replica.process.stop)

    # ---- supervision -----------------------------------------------------------------------------------------

    async def _watch(self, replica: Replica) -> None:
        """Wait for the embedded engine to exit; then mark it down, kill its group and restart it."""
        proc = replica.process
        assert proc is not None
        failures = 0
        while True:
            code = await proc.wait_exited()
            lived = time.monotonic() - proc.started_at
            self.mark_down(replica, f"engine process exited (code {code})")
            proc.kill_group()
            replica.restarts += 1
            failures = failures + 1 if lived < _STARTUP_GRACE_S else 0
            delay = min(_MAX_BACKOFF_S, 2.0 ** (failures - 1)) if failures else 0.0
            logger.warning(
                "engine exited; restarting",
                extra={"replica": replica.index, "code": code, "lived_s": round(lived, 1), "delay_s": delay},
            )
            await asyncio.sleep(delay)
            try:
                proc.start()
            except OSError:
                logger.exception("engine restart failed", extra={"replica": replica.index})

    async def died(self, replica: Replica, since: int, within_s: float = 0.5) -> bool:
        """Whether the replica went down after its ``downs`` count was ``since`` (taken when the exchange began), or
        its engine process exits within ``within_s``: a killed process closes its sockets a moment before the kernel
        reports its exit, so a dropped connection can come first. The count matters because the supervisor may
        already have restarted the process, which then runs again although the one that answered is gone."""
        proc = replica.process
        deadline = time.monotonic() + within_s
        while replica.downs == since:
            if proc is not None and not proc.running():
                return True
            if proc is None or time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def mark_down(self, replica: Replica, reason: str) -> None:
        """Stop choosing ``replica`` now (it died, or refused a connection) and probe it again right away."""
        if replica.healthy:
            logger.warning("replica down", extra={"replica": replica.index, "reason": reason})
        replica.healthy = replica.in_sync = False
        replica.downs += 1
        replica.loaded = set()
        replica.last_error = reason
        self.metrics.replica_ready.labels(str(replica.index)).set(0)
        self.poke()

    # ---- health ----------------------------------------------------------------------------------------------

    async def _health_loop(self) -> None:
        interval = self.settings.server.health_interval_s
        while True:
            # A replica that is down is looked at again soon, so that it serves again as soon as it is back.
            down = any(not r.healthy for r in self.replicas)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wake.wait(), timeout=min(interval, _DOWN_PROBE_S) if down else interval
                )
            self._wake.clear()
            try:
                await self.probe_all()
            except Exception:  # the loop must survive anything
                logger.exception("health probe failed")

    def poke(self) -> None:
        """Probe now instead of at the next interval."""
        self._wake.set()

    async def probe_all(self) -> None:
        await asyncio.gather(*(self.probe(r) for r in self.replicas))
        # Reconcile replicas that need it, and wait for it only at start-up (first probe); later it runs beside.
        for replica in self.replicas:
            if replica.healthy and not replica.in_sync:
                self._schedule_reconcile(replica)
        if not self._task:
            await asyncio.gather(*self._reconciling.values(), return_exceptions=True)

    async def probe(self, replica: Replica) -> None:
        was_healthy = replica.healthy
        if replica.process is not None and not replica.process.running():
            self.mark_down(replica, "engine process not running (restarting)")  # _watch restarts it
            return
        downs = replica.downs
        try:
            resp = await self.http.get(f"{replica.url}/v1/models", timeout=5.0)
            resp.raise_for_status()
            data = resp.json().get("data", [])
            if replica.downs != downs:
                return  # it went down while this probe was on its way: the next probe decides
        except (httpx.HTTPError, ValueError) as exc:
            if was_healthy:
                logger.warning("replica unhealthy", extra={"replica": replica.index, "error": str(exc)})
            replica.healthy = replica.in_sync = False
            replica.last_error = str(exc) or type(exc).__name__
            self.metrics.replica_ready.labels(str(replica.index)).set(0)
            return
        loaded = {m["id"] for m in data if m.get("parent")}
        base = [m["id"] for m in data if not m.get("parent")]
        replica.base_id = base[0] if base else None
        replica.loaded = loaded
        # Registered adapters it does not hold (an engine restarted behind our back, or was reset) are loaded
        # again in the background; the replica keeps serving the rest meanwhile.
        missing = self.desired() - loaded - set(replica.failed_adapters)
        if was_healthy and replica.in_sync and missing:
            logger.warning(
                "replica misses adapters; re-applying registry",
                extra={"replica": replica.index, "missing": sorted(missing)},
            )
            self._schedule_reconcile(replica)
        replica.healthy = True
        replica.last_error = None
        if not was_healthy:
            logger.info("replica up", extra={"replica": replica.index, "url": replica.url})
            replica.in_sync = False
        self.metrics.replica_ready.labels(str(replica.index)).set(1 if replica.ready else 0)

    def _schedule_reconcile(self, replica: Replica) -> None:
        if self.reconciler is None:
            replica.in_sync = True
            return
        running = self._reconciling.get(replica.index)
        if running and not running.done():
            return

        async def run() -> None:
            assert self.reconciler is not None
            try:
                holds = await self.reconciler(replica)
                replica.in_sync = replica.healthy and holds
            except Exception as exc:
                logger.exception("reconcile failed", extra={"replica": replica.index})
                replica.last_error = f"reconcile failed: {exc}"
            self.metrics.replica_ready.labels(str(replica.index)).set(1 if replica.ready else 0)

        self._reconciling[replica.index] = asyncio.create_task(run(), name=f"reconcile-{replica.index}")

    # ---- choice and requests ---------------------------------------------------------------------------------

    def ready_replicas(self) -> list[Replica]:
        return [r for r in self.replicas if r.ready]

    def choose(self, engine_model: str | None) -> Replica:
        """A ready replica, preferring ones that already hold the adapter, then (adapter-aware, see
        :func:`~serving.engine.admission.prefer`) the one where it joins a running batch, then the least busy."""
        ready = self.ready_replicas()
        if not ready:
            raise self.unavailable()
        if engine_model is not None:
            holding = [r for r in ready if engine_model in r.loaded]
            ready = prefer(holding or ready, engine_model, self.settings.engine.max_num_seqs)
        return min(ready, key=lambda r: (r.outstanding, r.index))

    def unavailable(self, what: str = "no engine replica is ready") -> ServiceUnavailableError:
        """The 503 for a request no replica can take now, naming each replica's state (never its URL)."""
        states = ", ".join(f"replica {r.index}: {r.state}" for r in self.replicas) or "no replicas configured"
        return ServiceUnavailableError(f"{what} ({states}); retry shortly", code="no_ready_replica")

    @contextlib.asynccontextmanager
    async def lease(self, replica: Replica, engine_model: str | None = None) -> AsyncIterator[Replica]:
        """Count a request against the replica while it runs (for least-outstanding choice), after admission to
        one of its LoRA slots when it uses an adapter."""
        replica.outstanding += 1
        gauge = self.metrics.in_flight.labels(str(replica.index))
        gauge.inc()
        try:
            if replica.admission is None or engine_model is None:
                yield replica
            else:
                async with replica.admission.admit(engine_model):
                    yield replica
        finally:
            replica.outstanding -= 1
            gauge.dec()

    async def engine_call(self, replica: Replica, path: str, body: dict[str, Any], what: str) -> None:
        """POST an admin call (load/unload adapter) to one replica; engine 4xx → 400, otherwise → 502."""
        try:
            resp = await self.http.post(f"{replica.url}{path}", json=body, timeout=120.0)
        except httpx.HTTPError as exc:
            raise EngineError(f"{what}: replica {replica.index} unreachable: {exc}") from exc
        if resp.status_code != 200:
            raise engine_error(resp.status_code, resp.content, f"{what} (replica {replica.index})")

    async def engine_models(self, replica: Replica) -> set[str]:
        """Fresh list of LoRA names a replica holds."""
        resp = await self.http.get(f"{replica.url}/v1/models", timeout=10.0)
        resp.raise_for_status()
        return {m["id"] for m in resp.json().get("data", []) if m.get("parent")}
