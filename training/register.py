"""Hand a trained adapter to a running ragswap gateway: ``POST /v1/adapters`` hot-loads it on every replica.

The gateway only loads adapters under its ``server.adapter_roots``; when ``adapter_root`` is given (a root the
gateway shares with this machine) the adapter is copied there first, into ``<root>/<name>/<timestamp>``.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class RegisterError(RuntimeError):
    """The gateway refused or could not be reached; the message carries its reason."""


def stage_adapter(adapter_dir: Path, adapter_root: Path, name: str) -> Path:
    """Copy ``adapter_dir`` under ``adapter_root`` unless it is already there; return the path to register."""
    src = adapter_dir.resolve()
    root = adapter_root.expanduser().resolve()
    if src.is_relative_to(root):
        return src
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    target = root / name / stamp
    shutil.copytree(src, target, ignore=shutil.ignore_patterns("checkpoints"))
    return target


def register_adapter(
    adapter_dir: Path,
    server_url: str,
    name: str,
    *,
    api_key: str | None = None,
    adapter_root: Path | None = None,
    version: int | None = None,
    aliases: list[str] | None = None,
    timeout: float = 300.0,
) -> dict[str, Any]:
    """Register ``adapter_dir`` as ``name`` on the gateway at ``server_url`` and return its description.

    Raises:
        RegisterError: the gateway answered with an error (its message is kept) or is unreachable.
    """
    import httpx

    path = stage_adapter(adapter_dir, adapter_root, name) if adapter_root else adapter_dir.resolve()
    body: dict[str, Any] = {"name": name, "path": str(path)}
    if version is not None:
        body["version"] = version
    if aliases:
        body["aliases"] = aliases
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = server_url.rstrip("/") + "/v1/adapters"
    try:
        resp = httpx.post(url, json=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise RegisterError(f"cannot reach {url}: {exc}") from exc
    if resp.status_code >= 400:
        try:
            message = resp.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = resp.text
        raise RegisterError(f"{url} answered {resp.status_code}: {message}")
    data: dict[str, Any] = resp.json()
    logger.info("registered %s as %s on %s", path, data.get("model", name), server_url)
    return data
