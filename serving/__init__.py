"""ragswap's OpenAI-compatible gateway over vLLM replicas with hot-swappable LoRA adapters.

Public API: :func:`build_app` (imported lazily so that ``ragswap --help`` stays fast).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serving.app import build_app

__all__ = ["build_app"]


def __getattr__(name: str) -> Any:
    if name == "build_app":
        from serving.app import build_app

        return build_app
    raise AttributeError(name)
