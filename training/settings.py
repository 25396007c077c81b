"""Training settings (``RAGSWAP_TRAINING__*``). Recipes themselves are YAML files (``ragswap train CONFIG``)."""

from __future__ import annotations

from pydantic import BaseModel


class TrainingSettings(BaseModel):
    """Defaults shared by training runs."""
