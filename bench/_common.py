"""Shared helpers of the benchmarks: machine description, result writing, percentiles, child processes."""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def machine() -> dict[str, Any]:
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor()
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "python": platform.python_version(),
        "gpu": None,
        **provenance(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


CODE_PACKAGES = ("ragswap", "serving", "retrieval", "training", "eval", "bench")
"""Source folders whose content a result depends on (hashed into ``code_sha256``)."""


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        return ""


def code_sha256() -> str:
    """sha256 over the tracked (and untracked, not ignored) Python sources of the product and the benches, as
    they are in the working tree: two results with the same value were produced by the same code."""
    listed = _git("ls-files", "--cached", "--others", "--exclude-standard", "--", *CODE_PACKAGES)
    digest = hashlib.sha256()
    for rel in sorted(set(listed.splitlines())):
        path = REPO / rel
        if rel.endswith(".py") and path.is_file():
            digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def provenance() -> dict[str, Any]:
    """``commit`` (HEAD), ``dirty`` (uncommitted changes outside ``bench/results``) and ``code_sha256``.

    Call it when the bench starts, before any result is written: a committed result is trustworthy only with
    ``dirty: false``, and ``code_sha256`` ties it to the exact sources even when the commit moved on.
    """
    status = _git("status", "--porcelain", "--untracked-files=normal")
    dirty = [line for line in status.splitlines() if line[3:] and not line[3:].startswith("bench/results/")]
    return {"commit": _git("rev-parse", "HEAD"), "dirty": bool(dirty), "code_sha256": code_sha256()}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def write_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path


_CHILDREN: list[subprocess.Popen[bytes]] = []


def _stop_children() -> None:
    for proc in _CHILDREN:
        if proc.poll() is None:
            proc.terminate()  # a gateway stops its engines and worker on SIGTERM
    for proc in _CHILDREN:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _exit_on_signal(signum: int, _frame: object) -> None:
    sys.exit(128 + signum)  # unwinds, so atexit stops the children


def spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(argv, **kwargs)`` for a long-lived child (a gateway): stopped when the bench exits,
    also on SIGTERM/SIGHUP or an exception, so no gateway and engine are left behind a cancelled bench."""
    if not _CHILDREN:
        atexit.register(_stop_children)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _exit_on_signal)
    proc = subprocess.Popen(argv, **kwargs)
    _CHILDREN.append(proc)
    return proc
