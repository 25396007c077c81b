"""On-disk cache of judge outputs, so that re-scoring a run (or a second config sharing answers) is free."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def cache_key(**parts: Any) -> str:
    """Stable key over everything that determines a judge's answer (model, prompt, schema, sampling)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class JudgeCache:
    """A thread- and process-safe key → raw output store (diskcache, an SQLite file).

    Only outputs that parsed are stored: a failed judgement is retried on the next run instead of replayed.
    """

    def __init__(self, directory: Path) -> None:
        import diskcache

        directory.mkdir(parents=True, exist_ok=True)
        self._cache = diskcache.Cache(str(directory))

    def get(self, key: str) -> str | None:
        value = self._cache.get(key)
        return value if isinstance(value, str) else None

    def set(self, key: str, raw: str) -> None:
        self._cache.set(key, raw)

    def close(self) -> None:
        self._cache.close()
