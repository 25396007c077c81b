"""Gateway settings (``RAGSWAP_SERVER__*``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from ragswap.settings_base import ragswap_home


@dataclass(frozen=True)
class TokenLimits:
    """How many tokens one completion may generate, for one caller (see :meth:`ServerSettings.token_limits`)."""

    default_max_tokens: int | None
    max_tokens_limit: int | None


class KeyTokenLimits(BaseModel):
    """Token limits of one API key, replacing the server-wide ones for requests made with it."""

    model_config = ConfigDict(extra="forbid")

    key: SecretStr
    """An entry of ``api_keys`` or ``admin_keys``."""
    default_max_tokens: int | None = Field(default=None, ge=1)
    """``None``: the server's ``default_max_tokens``."""
    max_tokens_limit: int | None = Field(default=None, ge=1)
    """``None``: the server's ``max_tokens_limit``."""


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
    default_max_tokens: int | None = Field(default=1024, ge=1)
    """``max_tokens`` of requests that set none, so that one forgotten limit cannot occupy an engine for minutes.
    The engine still shortens it to what fits the context, so it never fails a request with a long prompt.
    ``None``: up to the context length."""
    max_tokens_limit: int | None = Field(default=None, ge=1)
    """Largest ``max_tokens`` / ``max_completion_tokens`` a request may ask for (400 above it, naming the
    parameter). ``None``: only the context length bounds it."""
    key_limits: list[KeyTokenLimits] = Field(default_factory=list)
    """Per-key overrides of ``default_max_tokens`` / ``max_tokens_limit``."""

    @model_validator(mode="after")
    def _limits_name_known_keys(self) -> Self:
        known = {k.get_secret_value() for k in (*self.api_keys, *self.admin_keys)}
        if any(entry.key.get_secret_value() not in known for entry in self.key_limits):
            raise ValueError("key_limits: every key must also be listed in api_keys or admin_keys")
        return self

    def token_limits(self, key: str | None = None) -> TokenLimits:
        """The limits for a request made with ``key``: the server's, overridden by the key's own entry; the
        default never exceeds the limit."""
        default, limit = self.default_max_tokens, self.max_tokens_limit
        for entry in self.key_limits:
            if key is not None and entry.key.get_secret_value() == key:
                default = entry.default_max_tokens or default
                limit = entry.max_tokens_limit or limit
        if default is not None and limit is not None:
            default = min(default, limit)
        return TokenLimits(default_max_tokens=default, max_tokens_limit=limit)
