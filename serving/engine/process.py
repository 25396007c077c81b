"""Start, supervise and stop one vLLM OpenAI-server process with multi-LoRA and runtime adapter updates on.

The engine runs in its own process group (the api_server and every process vLLM starts under it) and is started
through :mod:`serving.engine.lifeline`, so that each of its processes dies with its parent. Stopping it, or
noticing that it exited, kills the whole group: no ``EngineCore``/``Worker`` process outlives its api_server.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.metadata
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from serving.engine import lifeline
from serving.engine.settings import EngineSettings

logger = logging.getLogger(__name__)


class EngineStartError(RuntimeError):
    """The engine exited or did not become ready; the message carries the tail of its log."""


def cpu_binding(replica: int, replicas: int, cpus: int | None = None) -> str:
    """Contiguous core range for one replica, e.g. ``0-1`` for a single replica on 2 cores."""
    cpus = cpus or os.cpu_count() or 1
    share = max(1, cpus // replicas)
    first = min(replica * share, cpus - 1)
    last = min(first + share, cpus) - 1
    return f"{first}-{last}" if last > first else str(first)


def engine_env(settings: EngineSettings, replica: int = 0) -> dict[str, str]:
    """Environment of an engine process: offline, no telemetry, runtime LoRA updates, bound threads."""
    env = dict(os.environ)
    env.update(
        {
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "HF_HUB_OFFLINE": env.get("HF_HUB_OFFLINE", "1"),
            "VLLM_CPU_KVCACHE_SPACE": str(settings.kv_cache_space_gib),
            "TOKENIZERS_PARALLELISM": "false",
            lifeline.ENV_FLAG: "1",
        }
    )
    env.update(settings.parallel.env())
    bind = settings.omp_threads_bind
    env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_binding(replica, settings.replicas) if bind == "auto" else bind
    return env


_NATIVE_BF16 = re.compile(r"\b(avx512_bf16|amx_bf16|bf16)\b")


@functools.cache
def cpu_computes_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic in hardware (``/proc/cpuinfo`` flags; ``False`` where unreadable)."""
    try:
        return bool(_NATIVE_BF16.search(Path("/proc/cpuinfo").read_text()))
    except OSError:
        return False


@functools.cache
def _vllm_cpu_build() -> bool:
    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def engine_dtype(dtype: str) -> str:
    """The ``--dtype`` for ``engine.dtype`` (``auto`` resolved as its docstring says)."""
    if dtype != "auto" or not _vllm_cpu_build():
        return dtype
    return "bfloat16" if cpu_computes_bf16() else "float32"


def engine_command(settings: EngineSettings, model_path: str, served_name: str, port: int) -> list[str]:
    # `vllm serve` fails for the CPU build (its dist is named vllm-cpu, not vllm): run the module directly.
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model_path,
        "--served-model-name",
        served_name,
        "--host",
        settings.host,
        "--port",
        str(port),
        "--dtype",
        engine_dtype(settings.dtype),
        "--max-model-len",
        str(settings.max_model_len),
        "--max-num-seqs",
        str(settings.max_num_seqs),
        "--disable-uvicorn-access-log",
    ]
    if settings.enable_lora:
        cmd += [
            "--enable-lora",
            "--max-lora-rank",
            str(settings.max_lora_rank),
            "--max-loras",
            str(settings.max_loras),
            "--max-cpu-loras",
            str(settings.max_cpu_loras),
        ]
    return [
        *cmd,
        *settings.parallel.vllm_args(),
        *compilation_args(settings),
        *structured_output_args(settings),
        *settings.extra_args,
    ]


_COMPACT_JSON = json.dumps({"backend": "xgrammar", "disable_any_whitespace": True})


def structured_output_args(settings: EngineSettings) -> list[str]:
    """vLLM flags for ``engine.compact_json``; none when ``extra_args`` configures structured outputs itself."""
    # vLLM also takes the config's fields one by one (``--structured-outputs-config.backend=...``).
    if not settings.compact_json or any(
        arg.startswith("--structured-outputs-config") for arg in settings.extra_args
    ):
        return []
    return ["--structured-outputs-config", _COMPACT_JSON]


_COMPILATION_FLAGS = ("--compilation-config", "-cc", "-O", "--optimization-level")


def compilation_args(settings: EngineSettings) -> list[str]:
    """vLLM flags for ``engine.compilation``; none when ``extra_args`` already sets compilation itself."""
    if any(arg.split("=", 1)[0] in _COMPILATION_FLAGS or arg.startswith("-O") for arg in settings.extra_args):
        return []
    if settings.compilation == "eager":
        return ["--compilation-config", '{"mode": 0}']
    return []  # inductor: vLLM's CPU default (DYNAMO_TRACE_ONCE + inductor), kept with LoRA by the plugin


@dataclass
class EngineProcess:
    """One embedded vLLM replica.

    Example:
        >>> engine = EngineProcess(settings, "/models/SmolLM2-135M-Instruct", "smollm2-135m-instruct")
        >>> engine.start(); engine.wait_ready()
        >>> engine.url
        'http://127.0.0.1:8100'
    """

    settings: EngineSettings
    model_path: str
    served_name: str
    replica: int = 0
    log_path: Path | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _pgid: int | None = field(default=None, init=False, repr=False)
    started_at: float = field(default=0.0, init=False)
    """``time.monotonic()`` of the last start."""

    @property
    def port(self) -> int:
        return self.settings.port + self.replica

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Launch the engine (returns at once; :meth:`wait_ready` or the pool's probes see it come up).

        Cheap (one ``posix_spawn``): call it from a thread that lives as long as the engine should, e.g. the
        gateway's event loop, since the engine is killed when the thread that started it exits.
        """
        if self.running():
            return
        self.kill_group()  # leftovers of a previous run, if any
        cmd = engine_command(self.settings, self.model_path, self.served_name, self.port)
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        logger.info("starting vLLM engine", extra={"replica": self.replica, "url": self.url})
        # Own process group (the kill reaches every process of the engine) and a lifeline to this process.
        try:
            self._proc = subprocess.Popen(
                lifeline.command(os.getpid(), cmd),
                env=engine_env(self.settings, self.replica),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            if not isinstance(log, int):
                log.close()  # the child holds its own copy
        self._pgid = self._proc.pid
        self.started_at = time.monotonic()

    def _log_tail(self, lines: int = 40) -> str:
        if not self.log_path or not self.log_path.is_file():
            return "(no engine log; set a log_path to capture it)"
        with self.log_path.open(errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines))

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until ``/v1/models`` answers; raise :class:`EngineStartError` if the process dies first."""
        deadline = time.monotonic() + (timeout or self.settings.startup_timeout_s)
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise EngineStartError(
                    f"vLLM engine exited with code {self._proc.returncode} during start-up:\n{self._log_tail()}"
                )
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=2.0).status_code == 200:
                    logger.info("vLLM engine ready", extra={"replica": self.replica, "url": self.url})
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise EngineStartError(f"vLLM engine not ready in time:\n{self._log_tail()}")

    def kill_group(self) -> None:
        """SIGKILL every process left in the engine's process group (idempotent)."""
        pgid, self._pgid = self._pgid, None
        if pgid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)

    async def wait_exited(self) -> int | None:
        """Return the exit code as soon as the api_server exits (no polling: a pidfd in the event loop, or a
        thread blocked in ``wait()`` where pidfds are unavailable); ``None`` when nothing runs."""
        proc = self._proc
        if proc is None:
            return None
        try:
            fd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            return await asyncio.to_thread(proc.wait)
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await exited
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        return proc.wait()

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the engine's group, wait for the api_server, then SIGKILL whatever of the group is left."""
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:
                    logger.warning("vLLM engine ignored SIGTERM; killing it", extra={"replica": self.replica})
                logger.info("vLLM engine stopped", extra={"replica": self.replica})
        finally:
            self.kill_group()
            if proc is not None:
                proc.wait()
