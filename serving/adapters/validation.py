"""Checks an adapter directory before any engine sees it: location, peft format, base model, rank, targets.

Everything here reads files only (safetensors headers, JSON); call it off the event loop.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragswap import MANIFEST_FILE, SERVED_LORA_TARGETS, AdapterManifest, config_fingerprint
from serving.errors import BadRequestError, ForbiddenError

logger = logging.getLogger(__name__)

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"

# LoRA targets vLLM supports per architecture (linear layers of each decoder block); training's presets share it.
SUPPORTED_TARGETS: dict[str, frozenset[str]] = {
    name: frozenset(modules) for name, modules in SERVED_LORA_TARGETS.items()
}
# Initialisations that rewrite the base weights: the adapter alone is not the trained model.
_UNSUPPORTED_INITS = ("pissa", "olora", "corda", "loftq", "eva")
_KEY = re.compile(r"layers\.(\d+)\.(?:[\w.]+\.)?(\w+)\.lora_([AB])\.weight$")
_MODULE = re.compile(r"(?:^|\.)(\w+)\.lora_(?:embedding_)?[AB]\b")


@dataclass(frozen=True)
class AdapterInfo:
    """What validation learned about an adapter."""

    path: Path
    rank: int
    alpha: float
    target_modules: list[str]
    base_check: str
    """How the base model was verified: ``manifest`` (fingerprint) or ``shapes`` (weights vs base config)."""


def _model_key(name: str) -> str:
    """``/models/SmolLM2-135M-Instruct``, ``HuggingFaceTB/SmolLM2-135M-Instruct`` and ``smollm2-135m-instruct``
    name the same model."""
    return name.rstrip("/").rsplit("/", 1)[-1].lower()


def _bad(message: str, code: str) -> BadRequestError:
    return BadRequestError(message, param="path", code=code)


def resolve_adapter_path(raw: str, roots: list[Path]) -> Path:
    """The real path of ``raw`` if it lies under one of ``roots`` (symlinks resolved), else 403.

    Relative paths are taken relative to the first root. The containment check comes before any existence
    check, so the API does not reveal what exists outside the roots.
    """
    if not roots:
        raise ForbiddenError("no adapter roots configured (server.adapter_roots)", param="path")
    if "\x00" in raw:
        raise _bad("path contains a NUL byte", "invalid_path")
    try:
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = roots[0] / path
        real = path.resolve(strict=False)
        real_roots = [root.expanduser().resolve(strict=False) for root in roots]
        inside = any(real == root or real.is_relative_to(root) for root in real_roots)
        is_dir = inside and real.is_dir()
    except (OSError, RuntimeError) as exc:  # ENAMETOOLONG (a name over 255 bytes), a symlink loop, ...
        reason = getattr(exc, "strerror", None) or exc
        raise _bad(f"adapter path is not a usable path: {reason}", "invalid_path") from exc
    if not inside:
        raise ForbiddenError(
            f"adapter path {raw!r} is outside the allowed adapter roots",
            param="path",
            code="path_outside_roots",
        )
    if not is_dir:
        raise _bad(f"adapter directory {raw!r} does not exist", "adapter_not_found")
    return real


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise _bad(f"{what} is not valid JSON: {exc}", "invalid_adapter") from exc
    if not isinstance(data, dict):
        raise _bad(f"{what} must be a JSON object", "invalid_adapter")
    return data


def _weight_shapes(weights: Path) -> dict[str, list[int]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as fh:
            return {key: list(fh.get_slice(key).get_shape()) for key in fh.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise _bad(f"{WEIGHTS_FILE} is not a readable safetensors file: {exc}", "invalid_adapter") from exc


def _expected_shapes(base: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each decoder projection of the base model."""
    hidden = int(base["hidden_size"])
    heads = int(base["num_attention_heads"])
    kv_heads = int(base.get("num_key_value_heads") or heads)
    head_dim = int(base.get("head_dim") or hidden // heads)
    inter = int(base["intermediate_size"])
    return {
        "q_proj": (hidden, heads * head_dim),
        "k_proj": (hidden, kv_heads * head_dim),
        "v_proj": (hidden, kv_heads * head_dim),
        "o_proj": (heads * head_dim, hidden),
        "gate_proj": (hidden, inter),
        "up_proj": (hidden, inter),
        "down_proj": (inter, hidden),
    }


def _check_shapes(shapes: dict[str, list[int]], base: dict[str, Any]) -> None:
    expected = _expected_shapes(base)
    layers = int(base["num_hidden_layers"])
    for key, shape in shapes.items():
        match = _KEY.search(key)
        if not match or len(shape) != 2:
            continue
        layer, module, side = int(match[1]), match[2], match[3]
        if layer >= layers:
            raise _bad(
                f"adapter has weights for layer {layer}, the base model has {layers} layers",
                "base_model_mismatch",
            )
        if module not in expected:
            continue
        in_f, out_f = expected[module]
        got = shape[1] if side == "A" else shape[0]
        want = in_f if side == "A" else out_f
        if got != want:
            raise _bad(
                f"adapter weight {key} has shape {shape}, incompatible with the served base model "
                f"({module} expects {'in' if side == 'A' else 'out'}_features={want}): trained on another model?",
                "base_model_mismatch",
            )


def validate_adapter(path: Path, base_model_dir: Path, max_rank: int) -> AdapterInfo:
    """Raise :class:`BadRequestError` (400) naming the first reason ``path`` cannot be served; else describe it."""
    config_path, weights = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not config_path.is_file():
        raise _bad(f"{CONFIG_FILE} missing: not a peft adapter directory", "invalid_adapter")
    if not weights.is_file():
        hint = (
            " (found adapter_model.bin: re-save with safe_serialization)"
            if (path / "adapter_model.bin").exists()
            else ""
        )
        raise _bad(f"{WEIGHTS_FILE} missing{hint}", "invalid_adapter")
    config = _read_json(config_path, CONFIG_FILE)
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise _bad(f"peft_type {config.get('peft_type')!r} is not LORA", "unsupported_adapter")
    if config.get("modules_to_save"):
        raise _bad(
            f"modules_to_save={config['modules_to_save']} is not supported by vLLM: full copies of base layers "
            "cannot be hot-swapped; retrain without it or merge the adapter",
            "modules_to_save_unsupported",
        )
    if config.get("use_dora"):
        raise _bad(
            "DoRA adapters are not supported by vLLM; merge it into the base model", "unsupported_adapter"
        )
    if config.get("lora_bias"):
        raise _bad("LoRA bias (lora_bias) is not supported by vLLM", "unsupported_adapter")
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower().startswith(_UNSUPPORTED_INITS):
        raise _bad(
            f"init_lora_weights={init!r} modifies the base weights; convert to plain LoRA",
            "unsupported_adapter",
        )
    rank = int(config.get("r") or 0)
    ranks = [rank, *(int(v) for v in (config.get("rank_pattern") or {}).values())]
    if max(ranks) > max_rank:
        raise _bad(
            f"adapter rank {max(ranks)} exceeds the engine's max_lora_rank {max_rank} (engine.max_lora_rank)",
            "rank_too_large",
        )
    if rank < 1:
        raise _bad("adapter_config.json has no positive rank r", "invalid_adapter")

    shapes = _weight_shapes(weights)
    modules = sorted({m[1] for key in shapes if (m := _MODULE.search(key))})
    if not modules:
        raise _bad(f"{WEIGHTS_FILE} holds no LoRA weights", "invalid_adapter")
    base = _read_json(base_model_dir / "config.json", "base model config.json")
    supported = SUPPORTED_TARGETS.get(str(base.get("model_type")))
    if supported is not None and (unsupported := [m for m in modules if m not in supported]):
        raise _bad(
            f"target modules {unsupported} are not supported for {base.get('model_type')} "
            f"(supported: {sorted(supported)})",
            "unsupported_target_modules",
        )

    if (path / MANIFEST_FILE).is_file():
        try:
            manifest = AdapterManifest.read(path)
        except (OSError, ValueError) as exc:
            raise _bad(f"{MANIFEST_FILE} is invalid: {exc}", "invalid_adapter") from exc
        served = config_fingerprint(base_model_dir)
        if manifest.base_model.config_sha256 != served:
            raise _bad(
                f"adapter was trained for base model {manifest.base_model.name!r} whose architecture "
                "fingerprint differs from the served model's",
                "base_model_mismatch",
            )
        # The fingerprint decides; peft's base_model_name_or_path is where training loaded the model from (a path
        # on another machine, a hub id), so a different name is reported, not refused.
        declared = str(config.get("base_model_name_or_path") or "")
        if declared and _model_key(declared) != _model_key(manifest.base_model.name):
            logger.warning(
                "adapter config names another base model than its manifest; the manifest's fingerprint matches",
                extra={
                    "adapter": str(path),
                    "declared_base": declared,
                    "manifest_base": manifest.base_model.name,
                },
            )
        base_check = "manifest"
    else:
        declared = str(config.get("base_model_name_or_path") or "")
        logger.info(
            "no manifest; checking weight shapes", extra={"adapter": str(path), "declared_base": declared}
        )
        base_check = "shapes"
    _check_shapes(shapes, base)  # also with a manifest: cheap, and catches a manifest copied to the wrong dir
    return AdapterInfo(
        path=path,
        rank=max(ranks),
        alpha=float(config.get("lora_alpha") or rank),
        target_modules=modules,
        base_check=base_check,
    )
