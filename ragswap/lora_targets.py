"""The LoRA target modules ragswap serves, per architecture: one table behind training's presets and the
gateway's adapter validation, so that what is trained by default is what the gateway accepts.

These are the linear projections of attention and MLP in each decoder block that vLLM applies LoRA to;
embeddings and ``lm_head`` are left alone.
"""

from __future__ import annotations

DECODER_PROJECTIONS: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)

SERVED_LORA_TARGETS: dict[str, tuple[str, ...]] = {
    name: DECODER_PROJECTIONS
    for name in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "granite", "olmo2")
}
"""``model_type`` → the modules an adapter of that architecture may target."""
