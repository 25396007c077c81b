"""LoRA target-module presets per architecture: every linear projection of attention and MLP.

These are the modules vLLM can serve LoRA on for decoder models; embeddings and ``lm_head`` are left alone.
"""

from __future__ import annotations

_DECODER = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

PRESETS: dict[str, list[str]] = {
    **{
        name: _DECODER
        for name in (
            "llama",
            "mistral",
            "qwen2",
            "qwen3",
            "gemma",
            "gemma2",
            "gemma3_text",
            "granite",
            "olmo2",
        )
    },
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
}


def default_targets(model_type: str) -> list[str] | str:
    """The preset for ``model_type``; peft's ``all-linear`` (every linear layer but the output) otherwise."""
    return list(PRESETS.get(model_type, [])) or "all-linear"
