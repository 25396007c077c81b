"""The training recipe: an Axolotl-like YAML file validated as one pydantic model.

Every problem in a recipe is collected and reported at once (:class:`RecipeError`), so a user fixes a file in one
pass instead of one error per run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

AdapterType = Literal["lora", "dora", "qlora"]
DatasetType = Literal["alpaca", "prompt_completion", "chat", "text", "dpo"]
SFT_TYPES: frozenset[str] = frozenset({"alpaca", "prompt_completion", "chat", "text"})


class RecipeError(ValueError):
    """A recipe (or its datasets) is invalid; ``problems`` lists every reason, one per line."""

    def __init__(self, problems: list[str], source: str | Path | None = None) -> None:
        self.problems = problems
        where = f"{source}: " if source else ""
        super().__init__(where + f"{len(problems)} problem(s):\n" + "\n".join(f"  - {p}" for p in problems))


class DatasetSpec(BaseModel):
    """One training file. Relative paths are resolved against the recipe's folder."""

    model_config = ConfigDict(extra="forbid")

    path: Path
    """A ``.jsonl`` (one JSON object a line) or ``.json`` (a list of objects) file."""
    type: DatasetType
    """``alpaca`` {instruction, input?, output}, ``prompt_completion`` {prompt, completion},
    ``chat`` {messages: [{role, content}]}, ``text`` {text} (packed to ``max_seq_length``),
    ``dpo`` {prompt, chosen, rejected}."""
    system_prompt: str | None = None
    """Optional system message put in front of every prompt of this file."""


class TrainConfig(BaseModel):
    """One training run (``ragswap train CONFIG.yaml``). Defaults follow the usual LoRA recipe."""

    model_config = ConfigDict(extra="forbid")

    base_model: str = "smollm2-135m-instruct"
    """Catalog name, local Hugging Face directory or hub id (resolved with the offline model store)."""
    adapter: AdapterType = "lora"
    """``lora``; ``dora`` (weight-decomposed; vLLM cannot serve it unmerged); ``qlora`` (4-bit NF4, CUDA only)."""
    lora_r: int = Field(default=16, ge=1, le=512)
    lora_alpha: int = Field(default=32, ge=1)
    lora_dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] | None = None
    """Module names to adapt; ``None`` = the architecture's preset (all attention + MLP projections)."""
    datasets: list[DatasetSpec] = Field(default_factory=list)
    num_epochs: float = Field(default=3.0, gt=0)
    max_steps: int = Field(default=-1, ge=-1)
    """Stop after this many optimizer steps (``-1``: run ``num_epochs``)."""
    learning_rate: float = Field(default=2e-4, gt=0, le=1.0)
    lr_scheduler: Literal["linear", "cosine", "constant_with_warmup"] = "linear"
    warmup_ratio: float = Field(default=0.03, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    optimizer: Literal["adamw_torch"] = "adamw_torch"
    micro_batch_size: int = Field(default=4, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    max_seq_length: int = Field(default=512, ge=8)
    """Token limit of one sample (and the block size of packed ``text`` data)."""
    overlength: Literal["truncate", "drop"] = "drop"
    """What to do with samples longer than ``max_seq_length`` (they are counted and reported either way)."""
    val_set_size: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Fraction of samples held out for evaluation (0: no evaluation)."""
    early_stopping_patience: int | None = Field(default=None, ge=1)
    """Stop when eval loss has not improved for this many evaluations (needs ``val_set_size`` > 0)."""
    eval_steps: int | None = Field(default=None, ge=1)
    """Evaluate every N steps (default: once per epoch)."""
    save_steps: int | None = Field(default=None, ge=1)
    """Checkpoint every N steps for ``--resume`` (default: once per epoch)."""
    save_total_limit: int = Field(default=2, ge=1)
    logging_steps: int = Field(default=5, ge=1)
    seed: int = 42
    dtype: Literal["float32", "bfloat16", "auto"] = "auto"
    """Training dtype; ``auto`` = bf16 on a GPU that supports it, fp32 on CPU (measured faster here)."""
    dpo_beta: float = Field(default=0.1, gt=0)
    """DPO temperature (``dpo`` datasets only)."""
    output_dir: Path = Path("outputs/adapter")
    """Where the adapter lands; checkpoints go to ``output_dir/checkpoints``."""
    name: str | None = None
    """Adapter name in the manifest (default: the output folder's name)."""
    modules_to_save: list[str] | None = None
    """Extra modules trained in full. vLLM cannot serve such adapters: only set it when you will merge."""
    num_threads: int | None = Field(default=None, ge=1)
    """CPU threads for torch (default: all cores)."""

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        problems: list[str] = []
        if not self.datasets:
            problems.append("datasets: at least one dataset is required")
        kinds = {d.type for d in self.datasets}
        if "dpo" in kinds and kinds != {"dpo"}:
            problems.append("datasets: dpo datasets cannot be mixed with SFT datasets in one run")
        if self.early_stopping_patience and self.val_set_size <= 0:
            problems.append("early_stopping_patience needs val_set_size > 0 (nothing to watch otherwise)")
        if self.adapter == "qlora" and self.dtype == "float32":
            problems.append("adapter qlora computes in bf16/fp16; dtype float32 does not apply")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def task(self) -> Literal["sft", "dpo"]:
        return "dpo" if any(d.type == "dpo" for d in self.datasets) else "sft"


def format_errors(exc: ValidationError) -> list[str]:
    problems: list[str] = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        problems.extend(f"{loc}: {m}" if loc else m for m in msg.split("; "))
    return problems


def parse_config(
    data: dict[str, Any], base_dir: Path | None = None, source: str | Path | None = None
) -> TrainConfig:
    """Validate a recipe mapping; relative dataset paths and ``output_dir`` are taken from ``base_dir``."""
    try:
        config = TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(format_errors(exc), source) from exc
    if base_dir is not None:
        for spec in config.datasets:
            if not spec.path.is_absolute():
                spec.path = (base_dir / spec.path).resolve()
    missing = [
        f"datasets.{i}.path: {d.path} does not exist"
        for i, d in enumerate(config.datasets)
        if not d.path.is_file()
    ]
    if missing:
        raise RecipeError(missing, source)
    return config


def load_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """Read a YAML recipe; ``overrides`` (non-``None`` values) replace its top-level keys.

    Dataset paths are relative to the recipe file; ``output_dir`` is relative to the working directory.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise RecipeError([f"cannot read recipe: {exc}"], path) from exc
    if not isinstance(data, dict):
        raise RecipeError(["a recipe is a YAML mapping of keys to values"], path)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return parse_config(data, base_dir=path.parent, source=path)
