"""vLLM engine settings (``RAGSWAP_ENGINE__*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ParallelBackend = Literal["auto", "mp", "ray"]

PARALLEL_FLAGS = frozenset(
    {
        "--tensor-parallel-size",
        "-tp",
        "--pipeline-parallel-size",
        "-pp",
        "--distributed-executor-backend",
        "--nnodes",
        "--node-rank",
    }
)
"""vLLM flags rendered from :class:`ParallelSettings`: refused in ``engine.extra_args``."""


class ParallelSettings(BaseModel):
    """How one engine replica spreads the model over accelerators and machines: vLLM's own tensor and pipeline
    parallelism, with its Ray executor for a model that spans nodes. Replicas (``engine.urls``) are the other,
    orthogonal axis: whole copies of the model behind the gateway."""

    model_config = ConfigDict(extra="forbid")

    tensor_parallel_size: int = Field(default=1, ge=1, le=64)
    """GPUs every layer is split across (``--tensor-parallel-size``). Keep it within one node (NVLink): it
    exchanges activations twice per layer."""
    pipeline_parallel_size: int = Field(default=1, ge=1, le=64)
    """Stages of consecutive layers, each on its own GPUs (``--pipeline-parallel-size``); across nodes this is
    the dimension to grow, since stages only pass activations at their boundaries."""
    nodes: int = Field(default=1, ge=1, le=64)
    """Machines one replica spans. More than one needs ``backend: ray``: start a Ray cluster (``ray start --head``
    on the engine's node, ``ray start --address=HEAD:6379`` on the others, or KubeRay) and run the engine on the
    head."""
    gpus_per_node: int | None = Field(default=None, ge=1, le=64)
    """GPUs each node gives the replica; when set, the sizes above are checked against it at start instead of
    by vLLM minutes later."""
    backend: ParallelBackend = "auto"
    """``--distributed-executor-backend``: ``auto`` (vLLM's choice: one process for one device, multiprocessing
    within a node), ``mp``, or ``ray`` (required for ``nodes > 1``)."""
    ray_address: str | None = None
    """Ray cluster the engine joins (``RAY_ADDRESS`` of the engine process, e.g. ``ray-head:6379``); empty: the
    cluster running on the engine's own node."""

    @property
    def world_size(self) -> int:
        """Accelerators one replica uses."""
        return self.tensor_parallel_size * self.pipeline_parallel_size

    @model_validator(mode="after")
    def _consistent(self) -> ParallelSettings:
        problems = []
        world, nodes = self.world_size, self.nodes
        if nodes > 1 and self.backend != "ray":
            problems.append(f"nodes={nodes}: a replica spanning nodes needs backend: ray")
        if self.ray_address and self.backend != "ray":
            problems.append("ray_address is only used with backend: ray")
        if world % nodes:
            problems.append(
                f"tensor_parallel_size × pipeline_parallel_size = {world} does not divide over nodes={nodes}"
            )
        if self.gpus_per_node is not None:
            if world > nodes * self.gpus_per_node:
                problems.append(
                    f"the replica needs {world} GPUs but nodes × gpus_per_node = {nodes * self.gpus_per_node}"
                )
            if self.tensor_parallel_size > self.gpus_per_node:
                problems.append(
                    f"tensor_parallel_size={self.tensor_parallel_size} > gpus_per_node={self.gpus_per_node} "
                    "splits every layer across nodes; span nodes with pipeline_parallel_size instead"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def vllm_args(self) -> list[str]:
        """The vLLM server flags for these settings (none for the single-device default)."""
        args = []
        if self.tensor_parallel_size > 1:
            args += ["--tensor-parallel-size", str(self.tensor_parallel_size)]
        if self.pipeline_parallel_size > 1:
            args += ["--pipeline-parallel-size", str(self.pipeline_parallel_size)]
        if self.backend != "auto":
            args += ["--distributed-executor-backend", self.backend]
        return args

    def env(self) -> dict[str, str]:
        """Environment of the engine process (the Ray cluster to join)."""
        return {"RAY_ADDRESS": self.ray_address} if self.ray_address else {}


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
    dtype: str = "auto"
    """Weights and activations of the engine. ``auto``: on vLLM's CPU build, ``bfloat16`` where the CPU computes it
    natively (AVX512-BF16 or AMX on x86, BF16 on Arm) and ``float32`` elsewhere (an AVX2-only CPU emulates bf16:
    a bf16 matmul was ~100× slower than float32 on such a 2-core machine); elsewhere vLLM's own ``auto``. Any vLLM
    dtype (``bfloat16``, ``float32``, ``float16``) forces it."""
    max_model_len: int = Field(default=8192, ge=128)
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
    compact_json: bool = True
    """Structured outputs (``response_format`` ``json_object``/``json_schema``, ``structured_outputs.json``) come
    with no whitespace between JSON tokens: fewer tokens to generate, and a small model can no longer spend its
    ``max_tokens`` pretty-printing (seen with the 135M judge: 2 of 34 judged scores cut off at 512 tokens). vLLM
    offers this only engine-wide and only on its ``guidance``/``xgrammar`` backends, so on means
    ``--structured-outputs-config {"backend": "xgrammar", "disable_any_whitespace": true}``: xgrammar, the backend
    vLLM's ``auto`` picks first. The cost: a schema xgrammar cannot compile gets a 400 naming the unsupported
    feature where ``auto`` would fall back to guidance (the judge's schemas, bounded strings and arrays, are
    xgrammar's under ``auto`` too, so only the whitespace changes for them). Off: vLLM's ``auto`` choice,
    whitespace as the model likes. A ``--structured-outputs-config`` in ``extra_args`` overrides this."""
    startup_timeout_s: float = Field(default=300.0, gt=0)
    parallel: ParallelSettings = Field(default_factory=ParallelSettings)
    """Tensor/pipeline parallelism of each replica (``engine.parallel.*``)."""
    extra_args: list[str] = Field(default_factory=list)
    """Passed verbatim to ``vllm.entrypoints.openai.api_server`` (parallelism flags belong in ``parallel``; a
    ``--compilation-config``/``-cc``/``-O`` here overrides ``compilation``)."""

    @field_validator("urls")
    @classmethod
    def _strip_slash(cls, urls: list[str]) -> list[str]:
        return [u.rstrip("/") for u in urls]

    @field_validator("extra_args")
    @classmethod
    def _no_parallel_flags(cls, args: list[str]) -> list[str]:
        owned = sorted({a.split("=", 1)[0] for a in args} & PARALLEL_FLAGS)
        if owned:
            raise ValueError(
                f"{', '.join(owned)}: set engine.parallel (tensor_parallel_size, pipeline_parallel_size, nodes, "
                "backend) instead, so the combination is checked"
            )
        return args
