"""LoRA target-module presets per architecture: every linear projection of attention and MLP.

The architectures the gateway serves take their modules from ``ragswap.SERVED_LORA_TARGETS`` (the table its
adapter validation checks against); the others here can be trained and exported merged.
"""

from __future__ import annotations

from ragswap import SERVED_LORA_TARGETS

PRESETS: dict[str, list[str]] = {
    **{name: list(modules) for name, modules in SERVED_LORA_TARGETS.items()},
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
}


def default_targets(model_type: str) -> list[str] | str:
    """The preset for ``model_type``; peft's ``all-linear`` (every linear layer but the output) otherwise."""
    return list(PRESETS.get(model_type, [])) or "all-linear"
