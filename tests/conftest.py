"""Session-wide fixtures: real models from the offline store, one real vLLM engine shared by all tests.

Everything here is real: the SmolLM2-135M-Instruct and all-MiniLM-L6-v2 weights prepared by
``ragswap models prepare`` (``make test`` runs it first) and vLLM's CPU build.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ragswap.model_store import ModelSettings, resolve_model
from serving.engine import EngineProcess, EngineSettings

BASE_MODEL = "smollm2-135m-instruct"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def model_settings() -> ModelSettings:
    return ModelSettings()


@pytest.fixture(scope="session")
def base_model_path(model_settings: ModelSettings) -> Path:
    return Path(resolve_model(BASE_MODEL, model_settings))


@pytest.fixture(scope="session")
def embedding_model_path(model_settings: ModelSettings) -> Path:
    return Path(resolve_model("all-minilm-l6-v2", model_settings))


@pytest.fixture(scope="session")
def engine_settings() -> EngineSettings:
    return EngineSettings(port=free_port(), max_lora_rank=16, max_loras=4, max_num_seqs=48)


@pytest.fixture(scope="session")
def engine(
    engine_settings: EngineSettings, base_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineProcess]:
    """One real vLLM engine (CPU build, LoRA on, runtime adapter loading on) for the whole session."""
    log_path = tmp_path_factory.mktemp("engine") / "engine.log"
    proc = EngineProcess(engine_settings, str(base_model_path), BASE_MODEL, log_path=log_path)
    proc.start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()
