"""A stable fingerprint of a base model's architecture, used to check an adapter fits the served model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

# Fields that decide whether LoRA weights trained on one checkpoint apply to another.
_ARCH_FIELDS = (
    "model_type",
    "architectures",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
)


def config_fingerprint(model_dir: str | Path) -> str:
    """sha256 over the architecture fields of ``config.json`` (dtype and runtime options excluded)."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    subset = {k: config.get(k) for k in _ARCH_FIELDS}
    return hashlib.sha256(json.dumps(subset, sort_keys=True).encode()).hexdigest()
