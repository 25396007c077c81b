"""Gateway settings (``RAGSWAP_SERVER__*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ragswap.settings_base import ragswap_home


class ServerSettings(BaseModel):
    """The OpenAI-compatible gateway."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    api_keys: list[SecretStr] = Field(default_factory=list)
    """Bearer tokens allowed to call the API. With none configured the server only binds to loopback."""
    admin_keys: list[SecretStr] = Field(default_factory=list)
    """Bearer tokens that may also change adapters and collections."""
    state_dir: Path = Field(default_factory=lambda: ragswap_home() / "state")
    """Adapter registry, collections and evaluation jobs persist here."""
    adapter_roots: list[Path] = Field(default_factory=lambda: [ragswap_home() / "adapters"])
    """Adapters can only be registered from directories under these roots."""
    log_prompts: bool = False
    """Log prompt and completion text (off by default: prompts are user data)."""
    max_request_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    """Larger request bodies are refused with 413 before they are read."""
    request_timeout_s: float = Field(default=600.0, gt=0)
    """Longest a single proxied engine request may take (connect, read and stream)."""
    health_interval_s: float = Field(default=2.0, gt=0)
    """How often replicas are probed; a restarted or new replica gets the registry re-applied on the next probe."""
    drain_timeout_s: float = Field(default=30.0, ge=0)
    """On adapter removal, wait this long for in-flight requests on it before unloading it from the engines."""
