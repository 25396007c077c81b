"""End to end: train a LoRA on made-up facts, push it into the running gateway, answer through the openai client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openai import OpenAI

from ragswap.adapter_manifest import AdapterManifest
from ragswap.model_store.fingerprint import config_fingerprint
from tests.conftest import BASE_MODEL
from tests.training.conftest import accuracy, ask_all
from training import RegisterError, register_adapter

# The first test here trains the session's fact adapter and may start the engine: allow for a busy machine.
pytestmark = [pytest.mark.engine, pytest.mark.timeout(2400)]


def test_trained_adapter_describes_itself(facts_adapter: Path, base_model_path: Path) -> None:
    config = json.loads((facts_adapter / "adapter_config.json").read_text())
    assert (facts_adapter / "adapter_model.safetensors").is_file()
    assert not config.get("modules_to_save"), "vLLM cannot serve modules_to_save"
    assert sorted(config["target_modules"]) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    manifest = AdapterManifest.read(facts_adapter)
    assert manifest.base_model.config_sha256 == config_fingerprint(base_model_path)
    assert (manifest.adapter.r, manifest.adapter.alpha) == (16, 32)
    assert manifest.dataset["train_samples"] == manifest.dataset["samples"] > 0
    assert len(manifest.dataset["files"][0]["sha256"]) == 64
    curve = manifest.metrics["loss_curve"]["train"]
    assert curve[-1][1] < curve[0][1] / 4, curve
    assert {"torch", "transformers", "peft", "trl"} <= set(manifest.library_versions)
    assert manifest.metrics["tokens_per_second"] > 0
    assert manifest.metrics["wall_seconds"] > 0


def test_adapter_knows_the_facts_the_base_does_not(
    gateway: object, facts_adapter: Path, facts: list[tuple[str, str]]
) -> None:
    gw = gateway
    client = OpenAI(base_url=f"{gw.url}/v1", api_key=gw.api_key)  # type: ignore[attr-defined]
    questions, expected = [q for q, _ in facts], [a for _, a in facts]

    base = accuracy(ask_all(client, BASE_MODEL, questions), expected)
    registered = register_adapter(
        facts_adapter,
        gw.url,  # type: ignore[attr-defined]
        "company-facts",
        api_key=gw.admin_key,  # type: ignore[attr-defined]
        adapter_root=gw.adapter_root,  # type: ignore[attr-defined]
    )
    assert registered["name"] == "company-facts"
    answers = ask_all(client, "company-facts", questions)
    tuned = accuracy(answers, expected)

    assert base == 0.0
    wrong = [(a, e) for a, e in zip(answers, expected, strict=True) if a != e]
    assert tuned >= 0.9, wrong


def test_register_outside_adapter_roots_is_refused(gateway: object, facts_adapter: Path) -> None:
    with pytest.raises(RegisterError, match="403"):
        register_adapter(facts_adapter, gateway.url, "stray", api_key=gateway.admin_key)  # type: ignore[attr-defined]
