"""One training run: SFT (TRL ``SFTTrainer``) or DPO (TRL ``DPOTrainer``) of a LoRA/DoRA/QLoRA adapter.

The stages follow litgpt's recipes: :func:`train` resolves the base model and checks the hardware, prepares the
data, builds the model and peft config, fits (resumable from the last checkpoint), and saves a standard peft
adapter directory with its ``ragswap.json`` manifest.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragswap import AdapterManifest, model_loading
from training.config import TrainConfig
from training.data import PreparedData, load_datasets
from training.manifest import build_manifest
from training.targets import default_targets

if TYPE_CHECKING:
    from peft import LoraConfig
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

    from ragswap import ModelSettings

logger = logging.getLogger(__name__)


class HardwareError(RuntimeError):
    """The recipe needs hardware this machine does not have (QLoRA without a CUDA GPU)."""


@dataclass
class TrainResult:
    output_dir: Path
    manifest: AdapterManifest
    global_step: int
    train_loss: float | None
    eval_loss: float | None
    seconds: float
    tokens_per_second: float
    seconds_per_step: float


def check_hardware(config: TrainConfig) -> None:
    """Fail before loading anything when the recipe cannot run here."""
    import torch

    if config.adapter == "qlora":
        if not torch.cuda.is_available():
            raise HardwareError(
                "adapter: qlora needs a CUDA GPU (bitsandbytes 4-bit NF4 kernels); none is available on this "
                "machine. Use adapter: lora (same result at higher memory) or train on a GPU machine."
            )
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as exc:
            raise HardwareError(
                "adapter: qlora needs bitsandbytes; install ragswap[gpu] (pip install bitsandbytes)"
            ) from exc


def _dtype(config: TrainConfig) -> Any:
    import torch

    if config.dtype != "auto":
        return getattr(torch, config.dtype)
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    # On CPU fp32 steps were faster than bf16 autocast here (docs/training.md) and avoid bf16 rounding of LoRA updates.
    return torch.float32


def _load_model(config: TrainConfig, model_path: str) -> PreTrainedModel:
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": _dtype(config)}
    qlora = config.adapter == "qlora"
    if qlora:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["dtype"] = torch.bfloat16
        kwargs["device_map"] = {"": 0}
    with model_loading():
        model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    if qlora:
        from peft import prepare_model_for_kbit_training

        return prepare_model_for_kbit_training(model)
    return model


def lora_config(config: TrainConfig, model_type: str) -> LoraConfig:
    """The peft config of a recipe: targets from the architecture preset unless given, no ``modules_to_save``."""
    from peft import LoraConfig

    targets = config.target_modules or default_targets(model_type)
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        use_dora=config.adapter == "dora",
        modules_to_save=config.modules_to_save,
        task_type="CAUSAL_LM",
        bias="none",
    )


def _last_checkpoint(checkpoints: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None


def _training_args(config: TrainConfig, checkpoints: Path, has_eval: bool, progress: bool) -> dict[str, Any]:
    import torch

    use_cpu = not torch.cuda.is_available()
    per_epoch = "steps" if config.eval_steps else "epoch"
    args: dict[str, Any] = {
        "output_dir": str(checkpoints),
        "num_train_epochs": config.num_epochs,
        "max_steps": config.max_steps,
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": config.lr_scheduler,
        "warmup_steps": config.warmup_ratio,
        "weight_decay": config.weight_decay,
        "optim": config.optimizer,
        "per_device_train_batch_size": config.micro_batch_size,
        "per_device_eval_batch_size": config.micro_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "max_length": config.max_seq_length,
        "logging_steps": config.logging_steps,
        "save_strategy": "steps" if config.save_steps else "epoch",
        "save_steps": config.save_steps or 500,
        "save_total_limit": config.save_total_limit,
        "save_only_model": False,
        "seed": config.seed,
        "data_seed": config.seed,
        "report_to": [],
        "use_cpu": use_cpu,
        "bf16": _dtype(config) is torch.bfloat16 and not use_cpu,
        "disable_tqdm": not progress,
        "dataloader_num_workers": 0,
    }
    if has_eval:
        args |= {"eval_strategy": per_epoch, "eval_steps": config.eval_steps}
        if config.early_stopping_patience:
            args |= {
                "load_best_model_at_end": True,
                "metric_for_best_model": "eval_loss",
                "greater_is_better": False,
                "save_strategy": per_epoch,
                "save_steps": config.eval_steps or 500,
            }
    return args


def _build_trainer(
    config: TrainConfig,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    data: PreparedData,
    peft_config: LoraConfig,
    args: dict[str, Any],
    callbacks: list[TrainerCallback],
) -> Any:
    from datasets import Dataset

    train_ds = Dataset.from_list(data.train)
    eval_ds = Dataset.from_list(data.eval) if data.eval else None
    common = {
        "model": model,
        "train_dataset": train_ds,
        "eval_dataset": eval_ds,
        "processing_class": tokenizer,
        "peft_config": peft_config,
        "callbacks": callbacks,
    }
    if config.task == "dpo":
        from trl import DPOConfig, DPOTrainer

        dpo_args = DPOConfig(**args, beta=config.dpo_beta)
        return DPOTrainer(args=dpo_args, **common)
    from trl import SFTConfig, SFTTrainer

    packed = all(d.type == "text" for d in config.datasets)
    sft_args = SFTConfig(
        **args,
        packing=packed,
        packing_strategy="wrapped",
        completion_only_loss=None,
        include_num_input_tokens_seen="non_padding",
    )
    return SFTTrainer(args=sft_args, **common)


def train(
    config: TrainConfig,
    *,
    models: ModelSettings,
    resume: bool = False,
    progress: bool = True,
    callbacks: list[TrainerCallback] | None = None,
) -> TrainResult:
    """Train an adapter as the recipe says and write it (with ``ragswap.json``) to ``config.output_dir``.

    Args:
        config: the validated recipe.
        models: the model store ``config.base_model`` is resolved in (the entry point's ``settings.models``).
        resume: continue from the newest checkpoint under ``output_dir/checkpoints`` (fresh start if none).
        progress: show the progress bar.
        callbacks: extra ``transformers`` callbacks (e.g. to watch the loss).

    Raises:
        HardwareError: QLoRA on a machine without a CUDA GPU.
        DatasetError: unreadable, empty or malformed datasets, listing every problem.
    """
    import torch
    from transformers import AutoConfig, AutoTokenizer, EarlyStoppingCallback, set_seed

    from ragswap import resolve_model

    check_hardware(config)
    torch.set_num_threads(config.num_threads or os.cpu_count() or 1)
    set_seed(config.seed)
    model_path = resolve_model(config.base_model, models)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    data = load_datasets(
        config.datasets,
        tokenizer,
        max_seq_length=config.max_seq_length,
        overlength=config.overlength,
        val_set_size=config.val_set_size,
        seed=config.seed,
    )
    model_type = str(AutoConfig.from_pretrained(model_path).model_type)
    peft_config = lora_config(config, model_type)
    output_dir = Path(config.output_dir)
    checkpoints = output_dir / "checkpoints"
    resume_from = _last_checkpoint(checkpoints) if resume else None
    if resume and resume_from is None:
        logger.warning("no checkpoint under %s: starting from scratch", checkpoints)
    args = _training_args(config, checkpoints, bool(data.eval), progress)
    cbs = list(callbacks or [])
    if config.early_stopping_patience and data.eval:
        cbs.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    model = _load_model(config, model_path)
    trainer = _build_trainer(config, model, tokenizer, data, peft_config, args, cbs)
    logger.info(
        "training %s adapter on %s: %d train / %d eval samples",
        config.adapter,
        config.base_model,
        data.stats.train_samples,
        data.stats.eval_samples,
        extra={"task": config.task, "output_dir": str(output_dir)},
    )
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - started
    eval_loss = None
    if data.eval:
        eval_loss = float(trainer.evaluate()["eval_loss"])
    trainer.model.save_pretrained(str(output_dir))
    tokenizer.save_pretrained(str(output_dir))
    state = trainer.state
    steps_run = max(state.global_step - (_step_of(resume_from) if resume_from else 0), 1)
    # DPO batches carry no plain input_ids to count: estimate from the samples' token counts and epochs run.
    tokens = float(getattr(state, "num_input_tokens_seen", 0) or 0) or data.stats.train_tokens * float(
        state.epoch or 0
    )
    manifest = build_manifest(
        config,
        model_path=model_path,
        peft_config=peft_config,
        stats=data.stats,
        log_history=state.log_history,
        seconds=seconds,
        extra_metrics={
            "global_step": state.global_step,
            "train_loss": float(result.training_loss),
            "eval_loss": eval_loss,
            "tokens_seen": tokens,
            "tokens_per_second": tokens / seconds if seconds else 0.0,
            "seconds_per_step": seconds / steps_run,
        },
    )
    manifest.write(output_dir)
    if not config.save_steps:
        shutil.rmtree(checkpoints, ignore_errors=True)
    logger.info("adapter written to %s", output_dir, extra={"seconds": round(seconds, 1)})
    return TrainResult(
        output_dir=output_dir,
        manifest=manifest,
        global_step=state.global_step,
        train_loss=float(result.training_loss),
        eval_loss=eval_loss,
        seconds=seconds,
        tokens_per_second=tokens / seconds if seconds else 0.0,
        seconds_per_step=seconds / steps_run,
    )


def _step_of(checkpoint: str) -> int:
    try:
        return int(Path(checkpoint).name.rsplit("-", 1)[-1])
    except ValueError:
        return 0
