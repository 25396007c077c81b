"""No engine process outlives its parent: ``PR_SET_PDEATHSIG`` for every process of an embedded vLLM engine.

An embedded engine is a tree: the gateway starts vLLM's api_server, which starts the ``EngineCore`` process, which
may start ``Worker`` processes. Killing one of them with SIGKILL (the OOM killer, an operator, a crash) used to
leave its children running under PID 1, holding gigabytes and finishing abandoned requests. Each process now asks
the kernel for SIGKILL when its parent dies:

- the api_server is started through this module (``python -m serving.engine.lifeline PARENT_PID -m MODULE ...``),
  which sets the signal before vLLM is even imported, checks that the parent is still the one that started it,
  then runs the module in the same process;
- vLLM's own children (engine core, workers) load ragswap's vLLM plugin (:mod:`serving.engine.plugin`), which calls
  :func:`die_with_parent` first thing when :data:`ENV_FLAG` is set.

The gateway additionally kills the engine's whole process group whenever the api_server exits
(:meth:`serving.engine.process.EngineProcess.kill_group`), so nothing survives even where the signal is unavailable.
"""

from __future__ import annotations

import ctypes
import logging
import os
import runpy
import signal
import sys

logger = logging.getLogger(__name__)

ENV_FLAG = "RAGSWAP_ENGINE_LIFELINE"
"""Set (to ``1``) in the environment of embedded engines: their vLLM child processes then die with their parent."""
_PR_SET_PDEATHSIG = 1


def die_with_parent(expected_parent: int | None = None) -> bool:
    """Ask for SIGKILL when the parent process dies; exit now if it already has.

    Args:
        expected_parent: the pid that started this process; a different parent means it died before the signal
            was armed (this process was re-parented), so this process kills itself.

    Returns:
        Whether the signal is armed (Linux only; elsewhere the gateway's process-group kill remains).
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        logger.warning("prctl(PR_SET_PDEATHSIG) failed", extra={"errno": ctypes.get_errno()})
        return False
    parent = os.getppid()
    if parent == 1 or (expected_parent is not None and parent != expected_parent):
        os.kill(os.getpid(), signal.SIGKILL)  # the parent is gone already: do what the signal would have done
    return True


def die_with_mp_parent() -> bool:
    """:func:`die_with_parent` for a ``multiprocessing`` child of an embedded engine (no-op anywhere else)."""
    if os.environ.get(ENV_FLAG) != "1":
        return False
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is None:  # the api_server itself: armed by main() before vLLM started
        return False
    return die_with_parent(parent.pid)


def command(parent_pid: int, argv: list[str]) -> list[str]:
    """``argv`` (``[python, "-m", module, *args]``) run through this module on behalf of ``parent_pid``."""
    if argv[1:2] != ["-m"]:
        raise ValueError("lifeline runs python modules: expected [python, '-m', module, ...]")
    return [argv[0], "-m", __name__, str(parent_pid), *argv[1:]]


def main(argv: list[str]) -> None:
    """``PARENT_PID -m MODULE ARGS...``: arm the signal, then run MODULE as ``__main__`` with ARGS."""
    parent, flag, module, *args = argv
    if flag != "-m":
        raise SystemExit("usage: python -m serving.engine.lifeline PARENT_PID -m MODULE [ARGS...]")
    die_with_parent(int(parent))
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
