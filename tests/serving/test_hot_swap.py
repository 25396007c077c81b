"""Hot swap under load: 32 concurrent streams over base + 3 adapters while other adapters are loaded, unloaded
and aliases switched. No request may fail, and every output must equal that model's sequential greedy output."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import pytest
import torch
from openai import AsyncOpenAI

pytestmark = pytest.mark.engine

BASE = "smollm2-135m-instruct"
PROMPTS = [
    "What is the secret code word?",
    "Who guards the vault?",
    "Name a fruit that is yellow.",
    "What is 2 plus 2?",
]


@pytest.fixture(scope="module")
def random_adapters(base_model_path: Path, adapter_root: Path) -> dict[str, Path]:
    """Real peft LoRA adapters with random non-zero weights: one queried (gamma), two churned."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = {}
    model = AutoModelForCausalLM.from_pretrained(base_model_path, dtype=torch.float32)
    for seed, name in enumerate(("gamma", "churn-a", "churn-b")):
        torch.manual_seed(seed)
        config = LoraConfig(
            r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False
        )
        peft_model = get_peft_model(model, config)
        with torch.no_grad():
            for pname, param in peft_model.named_parameters():
                if "lora_B" in pname:
                    param.mul_(0.6)
        tmp = adapter_root / "random" / f".{name}"
        peft_model.save_pretrained(tmp)
        model = peft_model.unload()
        shutil.rmtree(adapter_root / "random" / name, ignore_errors=True)
        tmp.rename(adapter_root / "random" / name)
        out[name] = adapter_root / "random" / name
    return out


async def _stream(client: AsyncOpenAI, model: str, prompt: str) -> str:
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        temperature=0,
        max_tokens=16,
        stream=True,
    )
    return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])


async def test_hot_swap_under_load(gateway, lora_adapters, random_adapters) -> None:
    admin = httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers(admin=True), timeout=120)
    client = AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.api_key, max_retries=0, timeout=600)
    queried = {
        "hs-alpha": lora_adapters["alpha"],
        "hs-beta": lora_adapters["beta"],
        "hs-gamma": random_adapters["gamma"],
    }
    try:
        for name, path in queried.items():
            resp = await admin.post("/v1/adapters", json={"name": name, "path": str(path)})
            assert resp.status_code == 201, resp.text
        models = [BASE, *queried]
        jobs = [(models[i % 4], PROMPTS[(i // 4) % 4]) for i in range(32)]
        sequential = {job: await _stream(client, *job) for job in set(jobs)}
        for prompt in PROMPTS:  # each model really answers differently, so a misrouted request would show
            assert len({sequential[(m, prompt)] for m in models}) == 4, prompt

        stop = asyncio.Event()
        churn_ops: list[str] = []

        async def churn() -> None:
            i = 0
            while not stop.is_set():
                name = ("churn-a", "churn-b")[i % 2]
                resp = await admin.post(
                    "/v1/adapters", json={"name": f"hs-{name}", "path": str(random_adapters[name])}
                )
                assert resp.status_code == 201, resp.text
                resp = await admin.put("/v1/aliases/hs-live", json={"target": f"hs-{name}"})
                assert resp.status_code == 200, resp.text
                await asyncio.sleep(0.05)
                resp = await admin.delete(f"/v1/adapters/hs-{name}", params={"force": True})
                assert resp.status_code == 200, resp.text
                churn_ops.append(name)
                i += 1

        churner = asyncio.create_task(churn())
        # Rounds of concurrent requests go on until the churner has loaded and unloaded adapters at least twice
        # while requests were in flight (one round can finish before a second churn cycle on a fast machine).
        rounds = 0
        while rounds == 0 or (len(churn_ops) < 2 and rounds < 6 and not churner.done()):
            results = await asyncio.gather(*(_stream(client, *job) for job in jobs), return_exceptions=True)
            rounds += 1
            failures = [r for r in results if isinstance(r, BaseException)]
            assert failures == [], f"round {rounds}"
            mismatches = [
                (job, out) for job, out in zip(jobs, results, strict=True) if out != sequential[job]
            ]
            assert mismatches == [], f"round {rounds}"
        churned_during_requests = len(churn_ops)
        stop.set()
        await churner
        assert churned_during_requests >= 2  # adapters really were loaded and unloaded during the requests
    finally:
        for name in [*queried, "hs-churn-a", "hs-churn-b"]:
            await admin.delete(f"/v1/adapters/{name}", params={"force": True})
        await admin.aclose()
        await client.close()
