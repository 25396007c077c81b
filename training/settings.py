"""Training settings (``RAGSWAP_TRAINING__*``). Recipes themselves are YAML files (``ragswap train CONFIG``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class TrainingSettings(BaseModel):
    """Defaults shared by training runs."""

    model_config = ConfigDict(extra="forbid")

    output_root: Path = Path("outputs")
    """Where CLI runs write when a recipe gives a relative ``output_dir``."""
    num_threads: int | None = Field(default=None, ge=1)
    """torch CPU threads for training (default: all cores)."""
