"""ragswap: hot-swappable LoRA serving on vLLM, hybrid RAG on Qdrant, LoRA training and RAG evaluation.

The public entry points are the ``ragswap`` command (:mod:`ragswap.cli`) and :func:`load_settings`; each product
area is its own package: ``serving``, ``retrieval``, ``training``, ``eval``, ``controlplane``. What they share
lives here and is imported from the package root (``from ragswap import Settings``), lazily, so that importing a
name does not import the settings of every package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # real types for mypy; at run time the names load lazily
    from ragswap.adapter_manifest import MANIFEST_FILE, AdapterManifest, AdapterSpec, BaseModelRef
    from ragswap.atomic import write_atomic
    from ragswap.config import Settings, load_settings
    from ragswap.loading import model_loading
    from ragswap.lora_targets import SERVED_LORA_TARGETS
    from ragswap.model_store import ModelSettings, ModelStoreError, resolve_model, sha256_file
    from ragswap.model_store.fingerprint import config_fingerprint
    from ragswap.settings_base import ragswap_home

__version__ = "0.1.0"

_EXPORTS = {
    "AdapterManifest": "ragswap.adapter_manifest",
    "AdapterSpec": "ragswap.adapter_manifest",
    "BaseModelRef": "ragswap.adapter_manifest",
    "MANIFEST_FILE": "ragswap.adapter_manifest",
    "write_atomic": "ragswap.atomic",
    "Settings": "ragswap.config",
    "load_settings": "ragswap.config",
    "model_loading": "ragswap.loading",
    "SERVED_LORA_TARGETS": "ragswap.lora_targets",
    "ModelSettings": "ragswap.model_store",
    "ModelStoreError": "ragswap.model_store",
    "resolve_model": "ragswap.model_store",
    "sha256_file": "ragswap.model_store",
    "config_fingerprint": "ragswap.model_store.fingerprint",
    "ragswap_home": "ragswap.settings_base",
}

__all__ = [
    "MANIFEST_FILE",
    "SERVED_LORA_TARGETS",
    "AdapterManifest",
    "AdapterSpec",
    "BaseModelRef",
    "ModelSettings",
    "ModelStoreError",
    "Settings",
    "__version__",
    "config_fingerprint",
    "load_settings",
    "model_loading",
    "ragswap_home",
    "resolve_model",
    "sha256_file",
    "write_atomic",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(name)
    return getattr(importlib.import_module(module), name)
