"""Evaluation workers: claim queued jobs from the control plane, run them, store every scored sample.

A worker reaches the platform it evaluates the way a client does — chat completions, ``/v1/retrieve`` and (by
default) the judge through ``worker.gateway_url`` — so it can run on any machine that reaches a gateway and the
database. Each job it claims carries a lease it renews every third of ``worker.lease_s``; traces are written
through :class:`DatabaseTraceSink`, fenced by that lease, so a worker that lost its job (it was cancelled, or the
worker paused so long that another one took over) stops at its next write without storing anything more. A job
whose worker died is claimed again once its lease expired and resumes from the traces already stored.

Three ways to run one:

- ``ragswap worker``: a process of its own (:func:`run_worker_process`), as many as you like on PostgreSQL;
- ``ragswap serve`` on the embedded SQLite database starts one beside the gateway (``worker.embedded``): a child
  process at lower CPU priority (:class:`EmbeddedWorkerProcess`, the default), or a thread of the gateway
  process (:class:`EmbeddedWorkerThread`, sharing the gateway's GIL);
- in tests, :class:`EvaluationWorker` directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from controlplane import ClaimedJob, ControlPlane, JobStore
    from ragswap import Settings

logger = logging.getLogger(__name__)

EMBEDDED_FLAG = "--embedded-by"
"""``ragswap worker`` option of the child a gateway starts (settings on stdin, exits with its parent)."""


def gateway_url(settings: Settings) -> str:
    """Where workers reach the gateway: ``worker.gateway_url``, else this host's ``server.host:server.port``."""
    if settings.worker.gateway_url:
        return settings.worker.gateway_url.rstrip("/")
    host = settings.server.host
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{host}:{settings.server.port}"


def worker_api_key(settings: Settings) -> str | None:
    """``worker.api_key``, else the first configured user key, else the first admin key (None: no auth)."""
    if settings.worker.api_key is not None:
        return settings.worker.api_key.get_secret_value()
    keys = [*settings.server.api_keys, *settings.server.admin_keys]
    return keys[0].get_secret_value() if keys else None


def embedded_mode(settings: Settings, dialect: str) -> str:
    """``process``, ``thread`` or ``off`` for the worker ``ragswap serve`` runs (``auto``: process on SQLite)."""
    mode = settings.worker.embedded
    if mode == "auto":
        return "process" if dialect == "sqlite" else "off"
    return mode


class GatewayUnavailableError(RuntimeError):
    """The gateway the worker evaluates through stopped answering: the sample that failed meanwhile is not the
    system's fault and is not stored; the job goes back to the queue."""


def gateway_answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=3.0).status_code == 200
    except httpx.HTTPError:
        return False


class ServingYield:
    """The pace of a worker that shares the serving machine (an :data:`eval.runner.Pace`): waits while the gateway
    has interactive requests in flight, or had one in the last ``quiet_s``, at most ``max_wait_s``.

    ``SCHED_IDLE`` alone is not enough: on a virtual machine the hypervisor does not see guest priorities, and
    the engine's OpenMP threads wait at every barrier for the one that a busy worker delayed. Samples pass one
    at a time through a wait, so continuous load lets one sample through per ``max_wait_s``, not a burst. A
    gateway that does not answer ``/load`` (an older one, or it is restarting) is not waited for.
    """

    def __init__(self, url: str, quiet_s: float, max_wait_s: float, poll_s: float = 0.05) -> None:
        self.url = f"{url}/load"
        self.quiet_s = quiet_s
        self.max_wait_s = max_wait_s
        self.poll_s = poll_s
        self.waited_s = 0.0
        """Seconds spent waiting so far (for logs and tests)."""
        self._lock = asyncio.Lock()
        self._http = httpx.AsyncClient(timeout=2.0)

    async def busy(self) -> bool:
        try:
            body = (await self._http.get(self.url)).json()
            idle = body["idle_s"]
            return bool(body["interactive_in_flight"]) or (idle is not None and idle < self.quiet_s)
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return False

    async def __call__(self) -> None:
        async with self._lock:
            start = time.monotonic()
            # Polls another process (the gateway's /load): there is no event to wait on.
            while await self.busy() and time.monotonic() - start < self.max_wait_s:  # noqa: ASYNC110
                await asyncio.sleep(self.poll_s)
            self.waited_s += time.monotonic() - start

    async def aclose(self) -> None:
        await self._http.aclose()


def _failed(trace: Any) -> bool:
    return trace.error is not None or any(s.status == "failed" for s in trace.scores.values())


class DatabaseTraceSink:
    """``eval``'s trace sink over the control plane's job store (blocking; the runner calls it from a thread).

    A sample that failed is stored only if the gateway still answers: one that failed because the gateway went
    away (restart, network) raises :class:`GatewayUnavailableError` instead, so an outage never turns into
    failed samples in the results.
    """

    def __init__(
        self, jobs: JobStore, job_id: str, worker: str, attempt: int, gateway_url: str | None = None
    ) -> None:
        self.jobs = jobs
        self.job_id = job_id
        self.worker = worker
        self.attempt = attempt
        self.gateway_url = gateway_url

    def done(self) -> set[tuple[str, str]]:
        return self.jobs.traced(self.job_id)

    def append(self, trace: Any) -> None:
        """Store one trace; raises :class:`~controlplane.LeaseLostError` when this worker lost the job."""
        if self.gateway_url and _failed(trace) and not gateway_answers(self.gateway_url):
            raise GatewayUnavailableError(f"the gateway {self.gateway_url} does not answer")
        self.jobs.append_trace(
            self.job_id,
            self.worker,
            self.attempt,
            trace.config,
            trace.sample_id,
            trace.model_dump(mode="json"),
        )

    def all(self) -> list[Any]:
        from eval import SampleTrace

        return [SampleTrace.model_validate(t) for t in self.jobs.traces(self.job_id)]


class EvaluationWorker:
    """Claims and runs jobs until :meth:`stop`; a job interrupted by the stop goes back to the queue."""

    def __init__(
        self,
        settings: Settings,
        plane: ControlPlane,
        worker_id: str | None = None,
        *,
        embedded: bool = False,
    ) -> None:
        from controlplane import instance_id

        self.settings = settings
        cfg = settings.worker
        self.yields = cfg.yield_to_serving if cfg.yield_to_serving is not None else embedded
        """Whether samples wait for serving to be idle (:class:`ServingYield`)."""
        self.plane = plane
        self.id = worker_id or instance_id("worker")
        self.gateway_url = gateway_url(settings)
        self.api_key = worker_api_key(settings)
        self.last_contact = 0.0
        """``time.monotonic()`` of the last successful claim attempt or lease renewal (for readiness)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False

    # ---- control (callable from any thread) ------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping = True
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    def wake(self) -> None:
        """Look at the queue now (a job was just enqueued)."""
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    # ---- the loop --------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the queue until :meth:`stop`."""
        self._loop = asyncio.get_running_loop()
        self._stop, self._wake = asyncio.Event(), asyncio.Event()
        if self._stopping:
            return
        cfg = self.settings.worker
        running: set[asyncio.Task[None]] = set()
        logger.info("evaluation worker started", extra={"worker": self.id, "gateway": self.gateway_url})
        await self._wait_for_gateway()
        failing = False
        while not self._stop.is_set():
            try:
                while len(running) < cfg.concurrency:
                    claimed = await self.plane.call(self.plane.jobs.claim, self.id, cfg.lease_s)
                    self.last_contact = time.monotonic()
                    if claimed is None:
                        break
                    task = asyncio.create_task(self._execute(claimed), name=f"job-{claimed.record.id}")
                    running.add(task)
                    task.add_done_callback(running.discard)
                if failing:
                    logger.info("control plane reachable again", extra={"worker": self.id})
                failing = False
            except Exception as exc:
                if not failing:
                    logger.warning("cannot claim jobs", extra={"worker": self.id, "error": str(exc)})
                failing = True
            waits = [asyncio.ensure_future(e.wait()) for e in (self._stop, self._wake)]
            await asyncio.wait([*waits, *running], timeout=cfg.poll_interval_s, return_when="FIRST_COMPLETED")
            for w in waits:
                w.cancel()
            self._wake.clear()
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        logger.info("evaluation worker stopped", extra={"worker": self.id})

    async def _wait_for_gateway(self) -> None:
        """Claim nothing before the gateway answers (it may still be starting, e.g. the one that started us)."""
        assert self._stop is not None
        delay, warned = 0.2, time.monotonic()
        async with httpx.AsyncClient(timeout=5.0) as http:
            while not self._stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{self.gateway_url}/health")).status_code == 200:
                        return
                if time.monotonic() - warned > 30:
                    logger.warning("waiting for the gateway", extra={"gateway": self.gateway_url})
                    warned = time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=delay)
                delay = min(delay * 2, 5.0)

    async def _execute(self, claimed: ClaimedJob) -> None:
        from controlplane import LeaseLostError
        from eval import EvalRequest, prepare_run

        job_id, lease_s = claimed.record.id, self.settings.worker.lease_s
        run = asyncio.current_task()
        assert run is not None
        lost: list[str] = []

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(lease_s / 3)
                try:
                    await self.plane.call(self.plane.jobs.heartbeat, job_id, self.id, lease_s)
                    self.last_contact = time.monotonic()
                except LeaseLostError as exc:
                    lost.append(exc.message)
                    run.cancel()
                    return
                except Exception as exc:  # the database is away: keep running, the lease may still hold
                    logger.warning("lease renewal failed", extra={"job": job_id, "error": str(exc)})

        beat = asyncio.create_task(heartbeat(), name=f"lease-{job_id}")
        cfg = self.settings.worker
        pace = (
            ServingYield(self.gateway_url, cfg.yield_quiet_s, cfg.yield_max_wait_s) if self.yields else None
        )
        logger.info(
            "evaluation job claimed",
            extra={"job": job_id, "worker": self.id, "attempt": claimed.attempt, "done": claimed.record.done},
        )
        try:
            request = EvalRequest.model_validate(claimed.request)
            prepared = prepare_run(
                request, self.settings, server_url=self.gateway_url, api_key=self.api_key, run_id=job_id
            )
            sink = DatabaseTraceSink(self.plane.jobs, job_id, self.id, claimed.attempt, self.gateway_url)
            summary = await prepared.execute(sink=sink, pace=pace)
            await self.plane.call(
                self.plane.jobs.finish, job_id, self.id, "succeeded", summary=summary.model_dump(mode="json")
            )
            logger.info(
                "evaluation job succeeded",
                extra={
                    "job": job_id,
                    "worker": self.id,
                    "yielded_s": round(pace.waited_s, 1) if pace is not None else None,
                },
            )
        except LeaseLostError as exc:
            logger.info("evaluation job lost; stopping it", extra={"job": job_id, "reason": exc.message})
        except GatewayUnavailableError as exc:
            logger.warning("gateway unavailable; job handed back", extra={"job": job_id, "error": str(exc)})
            with contextlib.suppress(Exception):
                await self.plane.call(self.plane.jobs.release, job_id, self.id)
            await self._wait_for_gateway()
        except asyncio.CancelledError:
            if lost:
                logger.info("evaluation job lost; stopping it", extra={"job": job_id, "reason": lost[0]})
            else:  # this worker is stopping: give the job back, another worker (or the next start) resumes it
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.plane.call(self.plane.jobs.release, job_id, self.id))
                logger.info("evaluation job released", extra={"job": job_id, "worker": self.id})
                raise
        except Exception as exc:
            logger.exception("evaluation job failed", extra={"job": job_id})
            with contextlib.suppress(LeaseLostError):
                await self.plane.call(
                    self.plane.jobs.finish, job_id, self.id, "failed", error=f"{type(exc).__name__}: {exc}"
                )
        finally:
            beat.cancel()
            if pace is not None:
                await pace.aclose()


# ---- embedded in the gateway ---------------------------------------------------------------------------------


class EmbeddedWorkerThread:
    """A worker in a thread of the gateway process, on the gateway's control plane (shares its GIL)."""

    def __init__(self, settings: Settings, plane: ControlPlane) -> None:
        self.worker = EvaluationWorker(settings, plane, embedded=True)
        self._thread = threading.Thread(target=self._main, name="ragswap-eval-worker", daemon=True)

    def _main(self) -> None:
        asyncio.run(self.worker.run())

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self.worker.wake()

    def stop(self, timeout: float = 30.0) -> None:
        self.worker.stop()
        self._thread.join(timeout)


def _settings_json(settings: Settings) -> str:
    """The settings with secrets revealed (for a child process, over a pipe, never on a command line)."""
    from pydantic import SecretStr

    def reveal(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        if isinstance(value, dict):
            return {k: reveal(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [reveal(v) for v in value]
        return value

    return json.dumps(reveal(settings.model_dump()), default=str)


class EmbeddedWorkerProcess:
    """A ``ragswap worker`` child of the gateway, at ``worker.cpu_priority``, with the gateway's settings.

    It exits when the gateway does, even a killed one (the kernel signals it when its parent dies), releasing its
    job to the queue first.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "ragswap.cli", "worker", EMBEDDED_FLAG, str(os.getpid())]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
        assert self.proc.stdin is not None
        self.proc.stdin.write(_settings_json(self.settings).encode())
        self.proc.stdin.close()
        logger.info("embedded evaluation worker started", extra={"pid": self.proc.pid})

    def wake(self) -> None:
        """Nothing: the child polls every ``worker.poll_interval_s`` (a signal could arrive before its handler)."""

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _die_with_parent(parent: int) -> None:
    """SIGTERM this process when ``parent`` dies (Linux ``PR_SET_PDEATHSIG``), and exit now if it already did."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        raise SystemExit(0)


# ---- ``ragswap worker`` ---------------------------------------------------------------------------------------


def lower_cpu_priority(priority: str) -> None:
    """This process (and the threads it starts later) yields the CPU to serving: ``idle`` = ``SCHED_IDLE``.

    On a machine where the engine's OpenMP threads use every core, any runnable thread preempts one of them and
    the whole forward pass waits at the next barrier; a ``SCHED_IDLE`` worker only runs when a core is idle.
    """
    try:
        if priority == "idle" and hasattr(os, "sched_setscheduler"):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        elif priority in ("idle", "low"):
            os.nice(10)
    except OSError as exc:
        logger.warning("could not lower the worker's CPU priority", extra={"error": str(exc)})


class _Health(BaseHTTPRequestHandler):
    worker: EvaluationWorker

    def do_GET(self) -> None:
        body: dict[str, Any]
        if self.path == "/health":
            code, body = 200, {"status": "ok", "worker": self.worker.id}
        elif self.path == "/ready":
            cfg = self.worker.settings.worker
            fresh = (
                time.monotonic() - self.worker.last_contact
                < max(3 * cfg.poll_interval_s, cfg.lease_s / 3) + 5
            )
            code, body = (200, {"status": "ready"}) if fresh else (503, {"status": "not_ready"})
        else:
            code, body = 404, {"error": {"message": "not found", "type": "not_found_error"}}
        payload = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def health_server(worker: EvaluationWorker, port: int | None) -> Iterator[None]:
    """``GET /health`` and ``GET /ready`` on ``port`` (for container probes), while the block runs."""
    if port is None:
        yield
        return
    handler = type("Health", (_Health,), {"worker": worker})
    server = ThreadingHTTPServer(("0.0.0.0", port), handler)
    thread = threading.Thread(target=server.serve_forever, name="ragswap-worker-health", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def run_worker_process(settings: Settings, *, embedded_by: int | None = None) -> None:
    """The ``ragswap worker`` main: open the control plane, serve the queue until SIGTERM/SIGINT."""
    from controlplane import ControlPlane

    if embedded_by is not None:
        _die_with_parent(embedded_by)
    lower_cpu_priority(settings.worker.cpu_priority)
    url = settings.server.database_url
    plane = ControlPlane.open(
        url.get_secret_value() if url is not None else None,
        state_dir=settings.server.state_dir,
        import_legacy=False,
    )
    worker = EvaluationWorker(settings, plane, embedded=embedded_by is not None)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run()

    try:
        with health_server(worker, settings.worker.health_port):
            asyncio.run(main())
    finally:
        plane.close()
