"""``ragswap.json``: the manifest every ragswap adapter directory carries.

Written by ``training`` next to peft's ``adapter_config.json`` / ``adapter_model.safetensors``; read by the serving
registry to validate an adapter before it is loaded (base model fingerprint, rank, targets).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_FILE = "ragswap.json"
MANIFEST_FORMAT = "ragswap-adapter/1"


class BaseModelRef(BaseModel):
    name: str
    """Model reference as configured (catalog name, path or hub id)."""
    config_sha256: str
    """:func:`ragswap.model_store.fingerprint.config_fingerprint` of the base model."""


class AdapterSpec(BaseModel):
    type: Literal["lora", "dora", "qlora"] = "lora"
    r: int = Field(ge=1)
    alpha: float
    dropout: float = 0.0
    target_modules: list[str]
    modules_to_save: list[str] | None = None


class AdapterManifest(BaseModel):
    """Self-description of an adapter directory."""

    model_config = ConfigDict(extra="allow")

    format: str = MANIFEST_FORMAT
    name: str
    base_model: BaseModelRef
    adapter: AdapterSpec
    task: str = "sft"
    """``sft``, ``dpo``, ``merge``..."""
    dataset: dict[str, Any] = Field(default_factory=dict)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    library_versions: dict[str, str] = Field(default_factory=dict)
    created_at: str | None = None

    @classmethod
    def read(cls, adapter_dir: str | Path) -> AdapterManifest:
        return cls.model_validate_json((Path(adapter_dir) / MANIFEST_FILE).read_text())

    def write(self, adapter_dir: str | Path) -> Path:
        path = Path(adapter_dir) / MANIFEST_FILE
        path.write_text(self.model_dump_json(indent=2, exclude_none=True) + "\n")
        return path
