"""Where models live and which ones ragswap uses by default."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ragswap.settings_base import ragswap_home


class ModelSettings(BaseModel):
    """Model store settings (``RAGSWAP_MODELS__*``)."""

    model_config = ConfigDict(extra="forbid")

    dir: Path = Field(default_factory=lambda: ragswap_home() / "models")
    """Directory that ``ragswap models prepare`` fills; kept outside the clone so it is reused."""
    base_model: str = "smollm2-135m-instruct"
    """The LLM: an offline catalog name, a local Hugging Face directory, or a hub id."""
    embedding_model: str = "all-minilm-l6-v2"
    """The sentence-transformers bi-encoder used for dense retrieval and RAGAS embeddings."""
    dtype: str = "bfloat16"
    """dtype the GGUF weights are converted to."""
