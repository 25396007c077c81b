"""Eval tests: ragas telemetry off and its data dir in a temporary folder (it writes a uuid file there)."""

from __future__ import annotations

import os
import tempfile

os.environ["RAGAS_DO_NOT_TRACK"] = "true"
os.environ.setdefault("XDG_DATA_HOME", tempfile.mkdtemp(prefix="ragswap-eval-xdg-"))
