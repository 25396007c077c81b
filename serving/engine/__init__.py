"""vLLM engine replicas: process management and ragswap's CPU multi-LoRA ops (a vLLM plugin)."""

from serving.engine.process import (
    EngineProcess,
    EngineStartError,
    cpu_binding,
    engine_command,
    engine_dtype,
    engine_env,
)
from serving.engine.settings import EngineSettings

__all__ = [
    "EngineProcess",
    "EngineSettings",
    "EngineStartError",
    "cpu_binding",
    "engine_command",
    "engine_dtype",
    "engine_env",
]
