"""The ``ragswap.json`` manifest of a trained adapter: what it was trained from, how, and how it went."""

from __future__ import annotations

import datetime as dt
from importlib import metadata
from typing import TYPE_CHECKING, Any

from ragswap import AdapterManifest, AdapterSpec, BaseModelRef, config_fingerprint

if TYPE_CHECKING:
    from peft import LoraConfig

    from training.config import TrainConfig
    from training.data import DatasetStats

_LIBRARIES = (
    "torch",
    "transformers",
    "peft",
    "trl",
    "datasets",
    "accelerate",
    "sentence-transformers",
    "bitsandbytes",
)


def library_versions(names: tuple[str, ...] = _LIBRARIES) -> dict[str, str]:
    """Installed versions of the libraries a run depends on (absent ones omitted)."""
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def loss_curve(log_history: list[dict[str, Any]]) -> dict[str, list[list[float]]]:
    """``[[step, loss], ...]`` of the training and evaluation losses logged by the trainer."""
    train = [[h["step"], round(float(h["loss"]), 5)] for h in log_history if "loss" in h]
    evals = [[h["step"], round(float(h["eval_loss"]), 5)] for h in log_history if "eval_loss" in h]
    return {"train": train, "eval": evals}


def targets_of(peft_config: LoraConfig) -> list[str]:
    targets = peft_config.target_modules
    return sorted(targets) if isinstance(targets, (set, list)) else [str(targets)]


def build_manifest(
    config: TrainConfig,
    *,
    model_path: str,
    peft_config: LoraConfig,
    stats: DatasetStats,
    log_history: list[dict[str, Any]],
    seconds: float,
    extra_metrics: dict[str, Any],
) -> AdapterManifest:
    hyper = config.model_dump(
        mode="json", exclude={"datasets", "base_model", "output_dir", "name", "target_modules"}
    )
    return AdapterManifest(
        name=config.name or config.output_dir.name,
        base_model=BaseModelRef(name=config.base_model, config_sha256=config_fingerprint(model_path)),
        adapter=AdapterSpec(
            type=config.adapter,
            r=config.lora_r,
            alpha=config.lora_alpha,
            dropout=config.lora_dropout,
            target_modules=targets_of(peft_config),
            modules_to_save=config.modules_to_save,
        ),
        task=config.task,
        dataset=stats.as_dict(),
        hyperparameters=hyper,
        metrics={"loss_curve": loss_curve(log_history), "wall_seconds": round(seconds, 2), **extra_metrics},
        library_versions=library_versions(),
        created_at=now_iso(),
    )
