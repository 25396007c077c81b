"""ragswap services as child processes of this one: ``ragswap serve`` gateways and ``ragswap worker`` workers.

For trying the scale-out setup on one machine, and for the tests and benches that kill processes on purpose
(a gateway thread cannot be SIGKILLed). Each child gets its configuration as ``RAGSWAP_*`` environment variables
(the way a container does), logs to its own file, and is stopped — killed if need be — when the
:class:`LocalProcesses` group closes, also when the caller fails.

Example:
    >>> with LocalProcesses(tmp) as procs:
    ...     a = procs.gateway("a", {"RAGSWAP_SERVER__DATABASE_URL": url, "RAGSWAP_ENGINE__URLS": '["http://..."]'})
    ...     a.wait_ready()
    ...     a.kill()  # SIGKILL
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env_value(value: Any) -> str:
    """A settings value as its ``RAGSWAP_*`` variable wants it (lists and dicts as JSON)."""
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


@dataclass
class LocalProcess:
    """One ``ragswap`` child process."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    port: int | None = None
    """The HTTP port it answers on (the gateway's port, the worker's health port)."""
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> LocalProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ragswap.cli", *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.log_path.parent,
                start_new_session=True,  # a signal to the test runner's group does not reach it
            )
        finally:
            log.close()
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, path: str = "/ready", timeout: float = 180.0) -> None:
        """Until ``GET path`` answers 200; raises with the log's tail when the process exits or time runs out."""
        assert self.port is not None, "no port to probe"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(
                    f"{self.name} exited ({self.proc and self.proc.returncode}):\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.url}{path}", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (what a crashed machine or an OOM kill looks like)."""
        if self.running():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (graceful), SIGKILL if it does not exit in time."""
        if not self.running():
            return
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


class LocalProcesses:
    """A group of ragswap child processes under ``root`` (one log file each), all stopped on exit."""

    def __init__(self, root: Path, base_env: dict[str, str] | None = None) -> None:
        self.root = root
        self.base_env = dict(os.environ if base_env is None else base_env)
        for name in list(self.base_env):
            if name.startswith("RAGSWAP_") and name not in ("RAGSWAP_HOME", "RAGSWAP_LOG_LEVEL"):
                del self.base_env[name]  # only what the caller sets configures the children
        self.base_env.pop("RAGSWAP_CONFIG", None)
        self.processes: list[LocalProcess] = []

    def _env(self, settings: dict[str, Any]) -> dict[str, str]:
        return {**self.base_env, **{k: env_value(v) for k, v in settings.items()}}

    def gateway(self, name: str, settings: dict[str, Any], port: int | None = None) -> LocalProcess:
        """``ragswap serve`` with ``settings`` (``RAGSWAP_*`` names → values); its state dir under ``root``."""
        port = port or free_port()
        env = self._env(
            {
                "RAGSWAP_SERVER__HOST": "127.0.0.1",
                "RAGSWAP_SERVER__PORT": port,
                "RAGSWAP_SERVER__STATE_DIR": str(self.root / name / "state"),
                **settings,
            }
        )
        proc = LocalProcess(name, ["serve"], env, self.root / name / "gateway.log", port)
        self.processes.append(proc)
        return proc.start()

    def worker(self, name: str, settings: dict[str, Any]) -> LocalProcess:
        """``ragswap worker`` with ``settings``, answering ``/health`` and ``/ready`` on a port of its own."""
        port = free_port()
        env = self._env(
            {
                "RAGSWAP_SERVER__STATE_DIR": str(self.root / name / "state"),
                "RAGSWAP_WORKER__HEALTH_PORT": port,
                **settings,
            }
        )
        proc = LocalProcess(name, ["worker"], env, self.root / name / "worker.log", port)
        self.processes.append(proc)
        return proc.start()

    def close(self) -> None:
        for proc in reversed(self.processes):
            proc.stop(timeout=20)

    def __enter__(self) -> LocalProcesses:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
