"""Gateway settings (``RAGSWAP_SERVER__*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr

from ragswap.settings_base import ragswap_home


class ServerSettings(BaseModel):
    """The OpenAI-compatible gateway."""

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
