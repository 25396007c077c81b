"""The one source of configuration: defaults < YAML file < ``RAGSWAP_*`` environment variables < arguments.

Every package declares its own section as a pydantic model (``serving.settings``, ``retrieval.settings``, ...);
this module composes them. Nested fields use ``__`` in environment variables, e.g.
``RAGSWAP_ENGINE__MAX_LORA_RANK=32`` or ``RAGSWAP_SERVER__PORT=9000``. The YAML file is ``$RAGSWAP_CONFIG`` or
``./ragswap.yaml`` when present.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from eval import EvalSettings
from ragswap.model_store.settings import ModelSettings
from retrieval import RetrievalSettings
from serving import EngineSettings, ServerSettings, WorkerSettings


def config_file() -> Path | None:
    """The YAML configuration file in use, if any."""
    explicit = os.environ.get("RAGSWAP_CONFIG")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"RAGSWAP_CONFIG points at {path}, which is not a file")
        return path
    local = Path("ragswap.yaml")
    return local if local.is_file() else None


class Settings(BaseSettings):
    """All of ragswap's settings, one section per package."""

    model_config = SettingsConfigDict(
        env_prefix="RAGSWAP_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    models: ModelSettings = Field(default_factory=ModelSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_file()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings; call it in an app factory or CLI command, never at import time."""
    return Settings(**overrides)
