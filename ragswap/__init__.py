"""ragswap: hot-swappable LoRA serving on vLLM, hybrid RAG on Qdrant, LoRA training and RAG evaluation.

The public entry points are the ``ragswap`` command (:mod:`ragswap.cli`) and :func:`ragswap.config.load_settings`;
each product area is its own package: ``serving``, ``retrieval``, ``training``, ``eval``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "AdapterManifest": "ragswap.adapter_manifest",
    "MANIFEST_FILE": "ragswap.adapter_manifest",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(name)
    return getattr(importlib.import_module(module), name)
