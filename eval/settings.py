"""Evaluation settings (``RAGSWAP_EVAL__*``). Owned by the eval package."""

from __future__ import annotations

from pydantic import BaseModel


class EvalSettings(BaseModel):
    """Judge endpoint, metrics and run output defaults."""
