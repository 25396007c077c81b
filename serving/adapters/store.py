"""The registry's on-disk form: one JSON file in ``server.state_dir``, replaced atomically on every change."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

REGISTRY_FILE = "adapters.json"


class AdapterVersion(BaseModel):
    """One registered adapter version."""

    id: int
    """Increasing integer id, never reused."""
    name: str
    version: int
    path: str
    rank: int
    target_modules: list[str]
    base_check: str
    default_collection: str | None = None
    created_at: str

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def engine_name(self) -> str:
        """The LoRA name in the engines (one per version, so versions can be served side by side)."""
        return self.ref


class AliasRecord(BaseModel):
    target: str
    """``name@version``."""
    default_collection: str | None = None
    updated_at: str


class RegistryFile(BaseModel):
    format: Literal["ragswap-registry/1"] = "ragswap-registry/1"
    next_id: int = 1
    adapters: dict[str, dict[int, AdapterVersion]] = Field(default_factory=dict)
    aliases: dict[str, AliasRecord] = Field(default_factory=dict)


def read_registry(state_dir: Path) -> RegistryFile:
    path = state_dir / REGISTRY_FILE
    if not path.is_file():
        return RegistryFile()
    try:
        return RegistryFile.model_validate_json(path.read_bytes())
    except ValueError as exc:
        raise RuntimeError(
            f"adapter registry {path} is corrupt ({exc}); move it away to start empty"
        ) from exc


def write_registry(state_dir: Path, data: RegistryFile) -> None:
    """Write to a temporary file in the same directory, fsync, rename: readers see the old or new file."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".adapters-", suffix=".json", dir=state_dir)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(data.model_dump_json(indent=2) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, state_dir / REGISTRY_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
