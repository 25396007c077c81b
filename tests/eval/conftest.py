"""Eval tests: ragas telemetry off and its data dir in a temporary folder (it writes a uuid file there); the
``stand_in_judge`` fixture (see :mod:`tests.eval.standin_judge`)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

os.environ["RAGAS_DO_NOT_TRACK"] = "true"
os.environ.setdefault("XDG_DATA_HOME", tempfile.mkdtemp(prefix="ragswap-eval-xdg-"))

from tests.eval.standin_judge import StandInJudge


@pytest.fixture
def stand_in_judge() -> Iterator[Callable[..., StandInJudge]]:
    """Start stand-in judges: ``stand_in_judge("random")``; all are stopped at the end of the test."""
    started: list[StandInJudge] = []

    def start(mode: str = "broken-json", **options: Any) -> StandInJudge:
        judge = StandInJudge(mode, **options).__enter__()
        started.append(judge)
        return judge

    yield start
    for judge in started:
        judge.__exit__()
