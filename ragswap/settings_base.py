"""Shared helpers for the settings sections each package declares."""

from __future__ import annotations

import os
from pathlib import Path


def ragswap_home() -> Path:
    """Root of ragswap's caches and state: ``$RAGSWAP_HOME`` or ``~/.cache/ragswap``.

    Kept outside any clone so that models and the virtualenv survive a fresh checkout.
    """
    return Path(os.environ.get("RAGSWAP_HOME", Path.home() / ".cache" / "ragswap")).expanduser()
