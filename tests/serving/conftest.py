"""Serving tests: helpers shared by this directory (the session fixtures live in tests/conftest.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


@dataclass
class _RunningEngine:
    url: str


if os.environ.get("RAGSWAP_TEST_ENGINE_URL"):
    # Developer shortcut: reuse an engine started by `ragswap engine` (same base model, max_lora_rank 16)
    # instead of starting one per test session. CI never sets it.
    @pytest.fixture(scope="session")
    def engine() -> Iterator[_RunningEngine]:
        yield _RunningEngine(os.environ["RAGSWAP_TEST_ENGINE_URL"].rstrip("/"))
