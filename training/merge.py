"""Combine adapters into a new adapter (peft ``add_weighted_adapter``) or fold one into the base model.

A merged adapter is a plain LoRA directory with a manifest (``task: merge``), so it can be pushed to a gateway
like any trained adapter. ``export_merged`` writes a full model directory (``merge_and_unload``): the only way to
serve DoRA adapters or ones with ``modules_to_save`` on vLLM.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ragswap import (
    MANIFEST_FILE,
    AdapterManifest,
    AdapterSpec,
    BaseModelRef,
    config_fingerprint,
    model_loading,
)
from training.manifest import library_versions, now_iso

if TYPE_CHECKING:
    from ragswap import ModelSettings

logger = logging.getLogger(__name__)

MergeMethod = Literal["linear", "ties", "dare_linear", "dare_ties"]


class MergeError(ValueError):
    """Adapters cannot be combined (different base models, ranks, or bad weights)."""


def _adapter_info(path: Path) -> tuple[dict[str, object], AdapterManifest | None]:
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        raise MergeError(f"{path}: not a peft adapter directory (no adapter_config.json)")
    manifest = AdapterManifest.read(path) if (path / MANIFEST_FILE).is_file() else None
    return json.loads(config_file.read_text()), manifest


def _base_of(paths: list[Path], base_model: str | None, models: ModelSettings) -> tuple[str, str]:
    """(reference, local path) of the base model all adapters share."""
    from ragswap import resolve_model

    refs = set()
    fingerprints = set()
    for path in paths:
        config, manifest = _adapter_info(path)
        if manifest is not None:
            refs.add(manifest.base_model.name)
            fingerprints.add(manifest.base_model.config_sha256)
        elif config.get("base_model_name_or_path"):
            refs.add(str(config["base_model_name_or_path"]))
    if len(fingerprints) > 1:
        raise MergeError(
            f"adapters were trained on different base models (fingerprints {sorted(fingerprints)})"
        )
    ref = base_model or (sorted(refs)[0] if refs else None)
    if ref is None:
        raise MergeError("cannot tell the base model of these adapters: pass --base-model")
    local = resolve_model(ref, models)
    if fingerprints and config_fingerprint(local) not in fingerprints:
        raise MergeError(f"base model {ref!r} does not match the adapters' manifest fingerprint")
    return ref, local


def merge_adapters(
    adapters: list[Path],
    output_dir: Path,
    *,
    models: ModelSettings,
    method: MergeMethod = "linear",
    weights: list[float] | None = None,
    density: float = 0.5,
    base_model: str | None = None,
    name: str | None = None,
) -> AdapterManifest:
    """Weighted combination of LoRA adapters of one base model, written as a new adapter directory.

    Args:
        adapters: adapter directories (same base model; same rank for these methods).
        output_dir: where the merged adapter goes.
        models: the model store the base model is resolved in (the entry point's ``settings.models``).
        method: ``linear`` (weighted sum), ``ties`` / ``dare_linear`` / ``dare_ties`` (sparsified, ``density``).
        weights: one weight per adapter (default: equal, summing to 1).
        density: fraction of weights kept by ``ties``/``dare_*``.
        base_model: override of the base model reference (default: from the manifests).
        name: adapter name in the manifest (default: the output folder's name).
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if len(adapters) < 2:
        raise MergeError("give at least two adapters to merge")
    weights = weights or [1.0 / len(adapters)] * len(adapters)
    if len(weights) != len(adapters):
        raise MergeError(f"{len(weights)} weights for {len(adapters)} adapters")
    configs = [_adapter_info(p)[0] for p in adapters]
    ranks = {int(c["r"]) for c in configs}  # type: ignore[call-overload]
    if len(ranks) > 1:
        raise MergeError(f"adapters have different ranks {sorted(ranks)}: {method} needs equal ranks")
    if any(c.get("use_dora") for c in configs):
        raise MergeError("DoRA adapters cannot be combined; export each merged into the base instead")
    ref, local = _base_of(adapters, base_model, models)
    names = [f"a{i}" for i in range(len(adapters))]
    with model_loading():
        base = AutoModelForCausalLM.from_pretrained(local, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, str(adapters[0]), adapter_name=names[0])
        for adapter_name, path in zip(names[1:], adapters[1:], strict=True):
            model.load_adapter(str(path), adapter_name=adapter_name)
    kwargs = {"density": density} if method != "linear" else {}
    model.add_weighted_adapter(names, weights, adapter_name="default", combination_type=method, **kwargs)
    for adapter_name in names:
        model.delete_adapter(adapter_name)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(output_dir), selected_adapters=["default"])
    merged_config = json.loads((output_dir / "adapter_config.json").read_text())
    targets = merged_config.get("target_modules") or []
    manifest = AdapterManifest(
        name=name or output_dir.name,
        base_model=BaseModelRef(name=ref, config_sha256=config_fingerprint(local)),
        adapter=AdapterSpec(
            r=int(merged_config["r"]),
            alpha=float(merged_config["lora_alpha"]),
            target_modules=sorted(targets) if isinstance(targets, list) else [str(targets)],
        ),
        task="merge",
        dataset={"sources": [str(p.resolve()) for p in adapters]},
        hyperparameters={
            "method": method,
            "weights": weights,
            "density": density if method != "linear" else None,
        },
        library_versions=library_versions(),
        created_at=now_iso(),
    )
    manifest.write(output_dir)
    logger.info("merged %d adapters into %s (%s)", len(adapters), output_dir, method)
    return manifest


def export_merged(
    adapter: Path,
    output_dir: Path,
    *,
    models: ModelSettings,
    base_model: str | None = None,
    dtype: str = "bfloat16",
) -> Path:
    """Fold ``adapter`` into its base model and write a full Hugging Face model directory (with tokenizer).

    The base model is resolved in ``models`` (the entry point's ``settings.models``).
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _ref, local = _base_of([adapter], base_model, models)
    with model_loading():
        base = AutoModelForCausalLM.from_pretrained(local, dtype=getattr(torch, dtype))
        model = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(output_dir))
    AutoTokenizer.from_pretrained(local).save_pretrained(str(output_dir))
    logger.info("exported %s merged into %s to %s", adapter, local, output_dir)
    return output_dir
