"""Fixtures of the serving tests that use the stand-in engine (``tests/serving/stand_in_engine.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.serving.stand_in_engine import StandInEngine


@pytest.fixture(scope="module")
def stand_in_engine() -> Iterator[StandInEngine]:
    """An OpenAI-shaped stand-in for vLLM, one per test module (it records bodies and fails on demand)."""
    stand_in = StandInEngine().start()
    yield stand_in
    stand_in.stop()
