"""vLLM engine settings (``RAGSWAP_ENGINE__*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class EngineSettings(BaseModel):
    """How ragswap runs (or finds) its vLLM engine replicas."""

    model_config = ConfigDict(extra="forbid")

    urls: list[str] = Field(default_factory=list)
    """Already-running engine replicas (``http://host:port``). Empty: ragswap starts ``replicas`` itself."""
    replicas: int = Field(default=1, ge=1, le=16)
    """Embedded replicas to start when ``urls`` is empty; CPU cores are split between them."""
    host: str = "127.0.0.1"
    """Embedded engines listen on loopback only: the gateway is the public face."""
    port: int = Field(default=8100, ge=1024, le=65535)
    """Port of the first embedded replica; replica ``i`` uses ``port + i``."""
    dtype: str = "bfloat16"
    max_model_len: int = Field(default=2048, ge=128)
    enable_lora: bool = True
    """Multi-LoRA serving; off only for a base-model-only deployment (or to measure what LoRA costs)."""
    max_lora_rank: int = Field(default=64, ge=1)
    max_loras: int = Field(default=4, ge=1)
    """Adapters resident in one batch (GPU-side slots)."""
    max_cpu_loras: int = Field(default=32, ge=1)
    """Adapters cached by each engine; more can be registered, they are re-loaded on demand."""
    max_num_seqs: int = Field(default=64, ge=1)
    adapter_admission: bool = True
    """The gateway keeps the adapters in flight on each replica within its ``max_loras`` slots: requests join the
    batch of an adapter that has a slot, others wait at the gateway for the next free one, which goes to the waiting
    adapter with the most requests (see :mod:`serving.engine.admission`). Off: everything goes straight to vLLM."""
    adapter_max_wait_s: float = Field(default=2.0, ge=0)
    """Bounded wait of that admission: after this long, requests for the adapters in slots are held back until a
    slot frees for the request that waited."""
    kv_cache_space_gib: int = Field(default=1, ge=1)
    """``VLLM_CPU_KVCACHE_SPACE`` for the CPU build."""
    omp_threads_bind: str = "auto"
    """``VLLM_CPU_OMP_THREADS_BIND``: ``auto`` binds each replica to its share of all cores (vLLM's own default
    leaves one core idle: ~40 % less throughput on 2 cores)."""
    compilation: Literal["inductor", "eager"] = "inductor"
    """How the engine runs the model. ``inductor``: vLLM's CPU compilation (dynamo traces the model once, inductor
    generates C++ with gcc; cached under ``~/.cache/vllm`` and ``/tmp/torchinductor_$USER``), kept with LoRA by
    ragswap's plugin. ``eager``: no compilation (faster start, slower steps)."""
    startup_timeout_s: float = Field(default=300.0, gt=0)
    extra_args: list[str] = Field(default_factory=list)
    """Passed verbatim to ``vllm.entrypoints.openai.api_server`` (a ``--compilation-config``/``-cc``/``-O`` here
    overrides ``compilation``)."""

    @field_validator("urls")
    @classmethod
    def _strip_slash(cls, urls: list[str]) -> list[str]:
        return [u.rstrip("/") for u in urls]
