"""The gateway's view of its vLLM replicas: health, loaded adapters, outstanding requests, replica choice.

Replicas come from ``engine.urls`` or, when that is empty, are started here as embedded
:class:`~serving.engine.process.EngineProcess` children. A background loop probes each replica's ``/v1/models``
(which lists the LoRA adapters it holds); a replica that comes (back) up or lost adapters (an engine restart)
gets the registry re-applied through :attr:`EnginePool.reconciler` before it serves again. Embedded replicas
that exit are restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from ragswap.config import Settings
from serving.engine.admission import SlotAdmission, prefer
from serving.engine.process import EngineProcess
from serving.errors import BadRequestError, EngineError, GatewayError, NotFoundError, ServiceUnavailableError
from serving.ops.metrics import GatewayMetrics

logger = logging.getLogger(__name__)


@dataclass
class Replica:
    """One vLLM OpenAI server."""

    index: int
    url: str
    process: EngineProcess | None = None
    healthy: bool = False
    in_sync: bool = False
    """The registry was applied since it last came up."""
    base_id: str | None = None
    """The engine's own name for the base model (``--served-model-name``)."""
    loaded: set[str] = field(default_factory=set)
    """Engine LoRA names it reports as loaded."""
    outstanding: int = 0
    last_error: str | None = None
    restarts: int = 0
    last_probe: float = 0.0
    failed_adapters: dict[str, str] = field(default_factory=dict)
    """Engine LoRA name → why it could not be loaded here."""
    admission: SlotAdmission | None = None
    """Keeps the adapters in flight here within the engine's LoRA slots (``engine.adapter_admission``)."""

    @property
    def ready(self) -> bool:
        return self.healthy and self.in_sync


Reconciler = Callable[[Replica], Awaitable[None]]


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
        self._wake = asyncio.Event()
        self._reconciling: dict[int, asyncio.Task[None]] = {}

    # ---- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        engine = self.settings.engine
        if engine.urls:
            self.replicas = [Replica(index=i, url=url) for i, url in enumerate(engine.urls)]
        else:
            from ragswap.model_store import resolve_model

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
                await asyncio.to_thread(proc.start)
                self.replicas.append(Replica(index=i, url=proc.url, process=proc))
        if engine.adapter_admission:
            for replica in self.replicas:
                replica.admission = SlotAdmission(
                    engine.max_loras, engine.max_cpu_loras, engine.adapter_max_wait_s
                )
        await self.probe_all()
        self._task = asyncio.create_task(self._health_loop(), name="ragswap-health")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._reconciling.values()):
            task.cancel()
        for replica in self.replicas:
            if replica.process is not None:
                await asyncio.to_thread(replica.process.stop)

    # ---- health ----------------------------------------------------------------------------------------------

    async def _health_loop(self) -> None:
        interval = self.settings.server.health_interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
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
            replica.healthy = replica.in_sync = False
            replica.loaded = set()
            replica.last_error = "engine process exited"
            replica.restarts += 1
            logger.warning("engine exited; restarting", extra={"replica": replica.index})
            await asyncio.to_thread(replica.process.start)
            return
        try:
            resp = await self.http.get(f"{replica.url}/v1/models", timeout=5.0)
            resp.raise_for_status()
            data = resp.json().get("data", [])
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
        replica.last_probe = time.time()
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
                await self.reconciler(replica)
                replica.in_sync = replica.healthy
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
            raise ServiceUnavailableError(
                "no engine replica is ready yet; retry shortly (see /ready)", code="no_ready_replica"
            )
        if engine_model is not None:
            holding = [r for r in ready if engine_model in r.loaded]
            ready = prefer(holding or ready, engine_model, self.settings.engine.max_num_seqs)
        return min(ready, key=lambda r: (r.outstanding, r.index))

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
