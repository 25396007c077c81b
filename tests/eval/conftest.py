"""Eval tests: ragas telemetry off and its data dir in a temporary folder (it writes a uuid file there)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

os.environ["RAGAS_DO_NOT_TRACK"] = "true"
os.environ.setdefault("XDG_DATA_HOME", tempfile.mkdtemp(prefix="ragswap-eval-xdg-"))


@dataclass
class _RunningEngine:
    url: str


if os.environ.get("RAGSWAP_TEST_ENGINE_URL"):
    # Developer shortcut (as in tests/serving): reuse a running engine of the same base model. CI never sets it.
    @pytest.fixture(scope="session")
    def engine() -> Iterator[_RunningEngine]:
        yield _RunningEngine(os.environ["RAGSWAP_TEST_ENGINE_URL"].rstrip("/"))
