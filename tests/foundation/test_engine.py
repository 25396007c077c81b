"""The vLLM engine (CPU build) serves the prepared base model and stays correct on mixed LoRA batches."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import torch
from openai import AsyncOpenAI, OpenAI
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from serving.engine import EngineProcess, cpu_binding, engine_command, engine_dtype, engine_env
from serving.engine.process import cpu_computes_bf16
from serving.engine.settings import EngineSettings

pytestmark = pytest.mark.engine

BASE = "smollm2-135m-instruct"
MAX_LORAS = 4  # tests/conftest.py starts the session engine with max_loras=4
PROMPTS = [
    "Name a fruit that is yellow.",
    "Write one sentence about the sea.",
    "What is 2 plus 2?",
    "Give me a word that rhymes with cat.",
    "Describe a cloud in five words.",
    "What colour is grass?",
]


def test_cpu_binding_uses_every_core() -> None:
    assert cpu_binding(0, 1, cpus=2) == "0-1"
    assert [cpu_binding(i, 2, cpus=4) for i in range(2)] == ["0-1", "2-3"]
    assert cpu_binding(0, 1, cpus=1) == "0"


def test_engine_command_and_env_enable_runtime_lora() -> None:
    settings = EngineSettings(port=9100, max_lora_rank=8)
    cmd = engine_command(settings, "/m", "base", 9100)
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert "--enable-lora" in cmd and cmd[cmd.index("--max-lora-rank") + 1] == "8"
    assert "--compilation-config" not in cmd  # inductor: vLLM's CPU default, kept with LoRA by the plugin
    eager = engine_command(settings.model_copy(update={"compilation": "eager"}), "/m", "base", 9100)
    assert eager[eager.index("--compilation-config") + 1] == '{"mode": 0}'
    own = settings.model_copy(update={"compilation": "eager", "extra_args": ["-cc", '{"mode": 2}']})
    assert engine_command(own, "/m", "base", 9100).count("-cc") == 1  # the user's flag wins
    assert "--compilation-config" not in engine_command(own, "/m", "base", 9100)
    # engine.compact_json, on by default
    config = json.loads(cmd[cmd.index("--structured-outputs-config") + 1])
    assert config == {"backend": "xgrammar", "disable_any_whitespace": True}
    loose = settings.model_copy(update={"compact_json": False})
    assert "--structured-outputs-config" not in engine_command(loose, "/m", "base", 9100)
    mine = settings.model_copy(update={"extra_args": ["--structured-outputs-config.backend=xgrammar"]})
    assert "--structured-outputs-config" not in engine_command(mine, "/m", "base", 9100)  # the user's wins
    # engine.dtype auto: bf16 only where the CPU computes it (emulated bf16 is ~100x slower on AVX2)
    expected = "bfloat16" if cpu_computes_bf16() else "float32"
    assert cmd[cmd.index("--dtype") + 1] == engine_dtype("auto") == expected
    assert engine_dtype("float32") == "float32" and engine_dtype("bfloat16") == "bfloat16"
    env = engine_env(settings)
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert env["HF_HUB_OFFLINE"] == "1" and env["VLLM_NO_USAGE_STATS"] == "1"


def test_engine_answers_paris(engine: EngineProcess) -> None:
    client = OpenAI(base_url=f"{engine.url}/v1", api_key="unused")
    reply = client.chat.completions.create(
        model=BASE,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0,
        max_tokens=24,
    )
    assert "Paris" in (reply.choices[0].message.content or "")


@pytest.fixture(scope="module")
def random_adapters(base_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real peft LoRA adapters with non-zero random weights, one per engine LoRA slot.

    Filling every slot matters: vLLM's reference ops apply slot ``-1`` (the last slot) to base rows, which only
    shows when that slot holds an adapter.
    """
    root = tmp_path_factory.mktemp("random-adapters")
    adapters = {}
    for seed in range(MAX_LORAS):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_pretrained(base_model_path, dtype=torch.float32)
        config = LoraConfig(
            r=8,
            lora_alpha=16,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            init_lora_weights=False,  # random A and B: the adapter is active from the start
        )
        peft_model = get_peft_model(model, config)
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.mul_(0.6)
        path = root / f"random-{seed}"
        peft_model.save_pretrained(path)
        adapters[f"random-{seed}"] = path
    return adapters


async def _complete(client: AsyncOpenAI, model: str, prompt: str) -> str:
    reply = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=24
    )
    return reply.choices[0].message.content or ""


async def test_mixed_batches_match_sequential_outputs(
    engine: EngineProcess, random_adapters: dict[str, Path]
) -> None:
    """Regression for vllm-project/vllm#48421: base requests batched with LoRA requests must stay base outputs.

    With vLLM's reference ops (``RAGSWAP_LORA_OPS=reference``) every base output here differs from its
    sequential output; ragswap's grouped ops keep all of them equal.
    """
    assert engine.settings.max_loras == MAX_LORAS
    async with httpx.AsyncClient(base_url=engine.url, timeout=60) as http:
        for name, path in random_adapters.items():
            resp = await http.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)})
            assert resp.status_code == 200, resp.text
    try:
        client = AsyncOpenAI(base_url=f"{engine.url}/v1", api_key="unused", timeout=300)
        models = [BASE, *random_adapters]
        jobs = [(model, prompt) for prompt in PROMPTS for model in models]
        sequential = {job: await _complete(client, *job) for job in jobs}
        # The adapters really change the output, so a misapplied adapter would show.
        for prompt in PROMPTS:
            assert len({sequential[(m, prompt)] for m in models}) == len(models)
        for _ in range(2):
            concurrent = await asyncio.gather(*(_complete(client, *job) for job in jobs))
            mismatches = [job for job, out in zip(jobs, concurrent, strict=True) if out != sequential[job]]
            assert mismatches == []
    finally:
        async with httpx.AsyncClient(base_url=engine.url, timeout=60) as http:
            for name in random_adapters:
                await http.post("/v1/unload_lora_adapter", json={"lora_name": name})
