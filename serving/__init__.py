"""ragswap's OpenAI-compatible gateway over vLLM replicas with hot-swappable LoRA adapters.

Other packages import only the names listed here. Imports are lazy so that ``ragswap --help`` stays fast:
:func:`build_app` (the app factory), the ``engine``/``server``/``worker`` settings sections, :class:`EngineProcess`
(one vLLM engine), and the package's commands (:data:`cli_app`, :data:`adapters_app`) that ``ragswap.cli``
adds to the root command, with the client side of a promotion (:func:`promotion_body`, :func:`run_promotion`) that
``ragswap train --promote`` shares with ``ragswap adapters promote``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # real types for mypy; at run time the names load lazily
    from serving.app import build_app
    from serving.cli import adapters_app, cli_app, promotion_body, run_promotion
    from serving.engine import EngineProcess
    from serving.engine.settings import EngineSettings
    from serving.settings import ServerSettings, WorkerSettings

_EXPORTS = {
    "build_app": "serving.app",
    "adapters_app": "serving.cli",
    "cli_app": "serving.cli",
    "promotion_body": "serving.cli",
    "run_promotion": "serving.cli",
    "EngineProcess": "serving.engine",
    "EngineSettings": "serving.engine.settings",
    "ServerSettings": "serving.settings",
    "WorkerSettings": "serving.settings",
}

__all__ = [
    "EngineProcess",
    "EngineSettings",
    "ServerSettings",
    "WorkerSettings",
    "adapters_app",
    "build_app",
    "cli_app",
    "promotion_body",
    "run_promotion",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(name)
    return getattr(importlib.import_module(module), name)
