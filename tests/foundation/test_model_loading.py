"""Concurrent model loads leave transformers able to tie weights (``ragswap.model_loading``).

transformers' ``from_pretrained`` swaps ``PreTrainedModel.tie_weights`` for a no-op while it loads; two loads in
two threads could leave the no-op in place for the rest of the process, after which SmolLM2's ``lm_head`` loads
untied on the meta device (seen in CI: the base model answered "&" to "What is the capital of France?" and every
later training test failed with "Cannot copy out of meta tensor"). Four unguarded loads in four threads broke it on
the first try on this machine.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModelForCausalLM, PreTrainedModel

from ragswap import model_loading


def test_loads_in_many_threads_keep_weight_tying(embedding_model_path: Path, base_model_path: Path) -> None:
    original = PreTrainedModel.tie_weights
    errors: list[BaseException] = []

    def load() -> None:
        try:
            with model_loading():
                SentenceTransformer(str(embedding_model_path), device="cpu")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    try:
        for _ in range(3):
            threads = [threading.Thread(target=load) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert not errors
        assert PreTrainedModel.tie_weights is original, "a concurrent load left tie_weights patched out"
        with model_loading():
            model = AutoModelForCausalLM.from_pretrained(base_model_path, dtype=torch.bfloat16)
        assert model.lm_head.weight.device.type == "cpu"
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    finally:
        PreTrainedModel.tie_weights = original  # never leave the rest of the session broken
