"""DPO produces a loadable adapter; merged adapters serve in vLLM; an export merged into the base loads alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from openai import OpenAI

from ragswap import ModelSettings
from ragswap.adapter_manifest import AdapterManifest
from tests.training.conftest import RECIPES, accuracy, ask_all
from training import load_config, merge_adapters, register_adapter, train
from training.merge import export_merged

# The first test here trains the session's fact adapter and may start the engine: allow for a busy machine.
pytestmark = [pytest.mark.engine, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def dpo_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = load_config(
        RECIPES / "preferences_dpo.yaml", output_dir=tmp_path_factory.mktemp("dpo") / "prefs", max_steps=3
    )
    return train(config, models=ModelSettings(), progress=False).output_dir


def test_dpo_run_gives_a_loadable_adapter(dpo_adapter: Path, base_model_path: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    manifest = AdapterManifest.read(dpo_adapter)
    assert manifest.task == "dpo" and manifest.metrics["global_step"] == 3
    base = AutoModelForCausalLM.from_pretrained(base_model_path, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(dpo_adapter))
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(float(p.abs().max()) > 0 for p in lora_b), "DPO steps left the adapter at its init"


def test_merged_adapter_serves_in_vllm(
    gateway: object, facts_adapter: Path, dpo_adapter: Path, facts: list[tuple[str, str]], tmp_path: Path
) -> None:
    merged = tmp_path / "merged"
    manifest = merge_adapters(
        [facts_adapter, dpo_adapter], merged, models=ModelSettings(), method="linear", weights=[1.0, 0.05]
    )
    assert manifest.task == "merge" and manifest.hyperparameters["weights"] == [1.0, 0.05]
    gw = gateway
    register_adapter(merged, gw.url, "facts-merged", api_key=gw.admin_key, adapter_root=gw.adapter_root)  # type: ignore[attr-defined]
    client = OpenAI(base_url=f"{gw.url}/v1", api_key=gw.api_key)  # type: ignore[attr-defined]
    sample = facts[:10]
    answers = ask_all(client, "facts-merged", [q for q, _ in sample])
    assert accuracy(answers, [a for _, a in sample]) >= 0.7, answers


def test_export_merged_into_base_loads_as_a_plain_model(
    facts_adapter: Path, facts: list[tuple[str, str]], tmp_path: Path
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = export_merged(facts_adapter, tmp_path / "full", models=ModelSettings(), dtype="float32")
    assert not (out / "adapter_config.json").exists()
    tokenizer = AutoTokenizer.from_pretrained(out)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    sample = facts[:6]
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        for q, _ in sample
    ]
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out_ids = model.generate(**enc, max_new_tokens=24, do_sample=False)
    answers = [
        tokenizer.decode(ids[enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        for ids in out_ids
    ]
    assert accuracy(answers, [a for _, a in sample]) >= 5 / 6, answers
