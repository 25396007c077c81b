"""Reliability bench: a soak under mixed traffic with injected faults, then a large schema-fuzz run.

Soak (``--minutes``, default 10): a real gateway process (``ragswap serve``) with one embedded vLLM engine
(float32, so greedy outputs do not depend on batch composition) and two LoRA adapters, on loopback only. Workers
send, for the whole run: chat completions streamed and not, over the base model, both adapters and an alias that is
switched back and forth; text completions; RAG chat over a collection; ingest; search; adapter registrations and
removals; and clients that go away mid-request. Faults, bounded in number: the gateway is SIGKILLed once and
started again (same state dir), and the engine's api_server is SIGKILLed ``--engine-kills`` times.

Measured: requests sent and their outcomes by class (a 503 or a refused connection inside an outage window is
expected, anything else is not), wrong greedy outputs (compared with sequential references taken at the start; an
output that equals another model's reference is counted as misrouted too), processes of a killed engine or gateway
still alive 5 s later (orphans), time from each engine kill to the first 503 of ``/ready``, to ``/ready`` 200 and
to every adapter re-applied, and the gateway's RSS growth after warm-up.

Fuzz: schemathesis (``bench/_fuzz.py``, every check of the suite's fuzz test, ``--fuzz-examples`` per operation)
against a gateway over the same engine with ``max_tokens`` capped at 4: cases generated, 5xx answers, failures.

Run: ``python bench/reliability.py`` (~25 min on 2 cores: 10 min soak, engine starts, fuzz) ->
bench/results/reliability.json. ``--minutes 3 --engine-kills 1 --fuzz-examples 5`` is a quick check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# bench/ holds modules named like ragswap's packages (eval.py, retrieval.py): the repository root must come first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import psutil
import yaml
from rich.console import Console
from rich.table import Table

from bench._common import REPO, RESULTS, machine, percentile, spawn, write_results
from bench._fuzz import run_schemathesis, seed_resources
from bench.serving import free_port, make_adapters
from ragswap.config import Settings
from ragswap.model_store import ModelSettings, resolve_model
from ragswap.settings_base import ragswap_home
from serving.engine import EngineSettings
from serving.server import BackgroundGateway
from serving.settings import ServerSettings

BASE = "smollm2-135m-instruct"
USER_KEY = "sk-bench-user-00000000"
ADMIN_KEY = "sk-bench-admin-0000000"
PROMPTS = [
    "What is the capital of France?",
    "Name three primary colours.",
    "What do bees make?",
    "How many legs does a spider have?",
    "What is frozen water called?",
    "Which planet is known as the red planet?",
]
DOCS = [
    {"id": f"doc-{i}", "text": text}
    for i, text in enumerate(
        [
            "The Quillfeather return window is 30 days from delivery for unused items.",
            "Support is open Monday to Friday, 9:00 to 17:00 Central European Time.",
            "Orders above 50 euros ship for free within the European Union.",
            "Gift cards never expire and can be used for any product in the store.",
            "Damaged parcels must be reported within 48 hours with a photo of the box.",
            "Quillfeather pens are refilled with archival ink that does not fade.",
        ]
    )
]
MAX_TOKENS = 24
ENGINE = EngineSettings(
    dtype="float32", max_lora_rank=16, max_loras=4, max_num_seqs=32, startup_timeout_s=900
)
"""float32: greedy outputs do not depend on batch composition, so they can be compared with references."""
console = Console()


@dataclass
class Outcome:
    kind: str
    start: float
    end: float
    result: str
    """``ok``, ``wrong_output``, ``disconnected`` (the client left on purpose), or the failure: ``http_<status>``,
    ``sse_<type>``, an exception name."""
    misrouted: bool = False
    detail: str = ""
    """The failure's message (the error body, the SSE error event or the exception), for the report."""


@dataclass
class Fault:
    kind: str  # engine_kill | gateway_kill
    killed_at: float
    pids: list[int]
    unavailable_at: float | None = None
    ready_at: float | None = None
    adapters_at: float | None = None
    orphans: int = 0


@dataclass
class Soak:
    url: str
    refs: dict[tuple[str, str, str], str]
    models: list[str]
    outcomes: list[Outcome] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    stop: bool = False
    warm_from: float = 0.0
    """RSS growth is measured from here (a minute after the gateway restart) to the end."""


# ---- the gateway as a process ------------------------------------------------------------------------------------


def write_config(work: Path, gateway_port: int, engine_port: int, adapter_root: Path) -> Path:
    config = {
        "engine": ENGINE.model_copy(update={"port": engine_port}).model_dump(
            mode="json", exclude_defaults=True
        ),
        "server": {
            "host": "127.0.0.1",
            "port": gateway_port,
            "api_keys": [USER_KEY],
            "admin_keys": [ADMIN_KEY],
            "state_dir": str(work / "state"),
            "adapter_roots": [str(adapter_root)],
            "health_interval_s": 1.0,
            "max_tokens_limit": 512,
        },
    }
    path = work / "ragswap.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_gateway_process(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RAGSWAP_CONFIG": str(config), "PYTHONPATH": str(REPO)}
    with log.open("ab") as out:
        return spawn(
            [sys.executable, "-c", "from ragswap.cli import main; main()", "serve"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )


def wait_ready(url: str, timeout: float, poll: float = 0.25) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return time.monotonic()
        except httpx.HTTPError:
            pass
        time.sleep(poll)
    raise RuntimeError(f"gateway at {url} not ready after {timeout:.0f} s")


def engine_tree(gateway: subprocess.Popen[bytes]) -> tuple[int | None, list[int]]:
    """The api_server's pid (the lifeline process) and the pids of everything below it."""
    for child in psutil.Process(gateway.pid).children():
        if "serving.engine.lifeline" in " ".join(child.cmdline()):
            return child.pid, [p.pid for p in child.children(recursive=True)]
    return None, []


def count_alive(pids: list[int]) -> int:
    alive = 0
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive += 1
        except psutil.NoSuchProcess:
            pass
    return alive


def all_adapters_loaded(url: str, names: list[str]) -> bool:
    try:
        data = httpx.get(
            f"{url}/v1/replicas", headers={"Authorization": f"Bearer {USER_KEY}"}, timeout=5
        ).json()
    except (httpx.HTTPError, ValueError):
        return False
    return all(r["ready"] and set(names) <= set(r["adapters"]) for r in data["data"])


# ---- traffic -----------------------------------------------------------------------------------------------------


def sse_text(lines: list[str]) -> tuple[str, str | None, str]:
    """Concatenated content of an SSE answer, the error type if it carried one, and that error's message."""
    text, error, message = [], None, ""
    for line in lines:
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if "error" in chunk:
            error = str(chunk["error"].get("type"))
            message = str(chunk["error"].get("message") or "")
            continue
        for choice in chunk.get("choices") or []:
            text.append(choice.get("delta", {}).get("content") or choice.get("text") or "")
    return "".join(text), error, message


class Traffic:
    def __init__(self, soak: Soak, http: httpx.AsyncClient, index: int, seed: int) -> None:
        self.soak = soak
        self.http = http
        self.rng = random.Random(seed + index)
        self.last = "ok"
        self.extra_adapter = f"rb-extra-{index}"
        """Registered and removed by this worker only (the same weights as every worker's)."""
        self.user = {"Authorization": f"Bearer {USER_KEY}"}
        self.admin = {"Authorization": f"Bearer {ADMIN_KEY}"}

    def record(self, kind: str, start: float, result: str, misrouted: bool = False, detail: str = "") -> None:
        self.last = result
        self.soak.outcomes.append(Outcome(kind, start, time.monotonic(), result, misrouted, detail[:500]))

    def check(self, name: str, kind: str, prompt: str, text: str, start: float, allowed: list[str]) -> None:
        expected = {self.soak.refs[(kind, m, prompt)] for m in allowed}
        if text in expected:
            self.record(name, start, "ok")
            return
        others = {self.soak.refs[(kind, m, prompt)] for m in self.soak.models if m not in allowed}
        self.record(name, start, "wrong_output", misrouted=text in others)

    async def generate(self, stream: bool, chat: bool) -> None:
        model = self.rng.choice([*self.soak.models, "rb-live"])
        prompt = self.rng.choice(PROMPTS)
        kind = "chat" if chat else "completion"
        allowed = ["rb-a1", "rb-a2"] if model == "rb-live" else [model]  # the alias is switched meanwhile
        body: dict[str, Any] = {"model": model, "temperature": 0, "max_tokens": MAX_TOKENS, "stream": stream}
        if chat:
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        path = "/v1/chat/completions" if chat else "/v1/completions"
        name = f"{kind}_{'stream' if stream else 'json'}"
        start = time.monotonic()
        try:
            if stream:
                async with self.http.stream("POST", path, json=body, headers=self.user) as resp:
                    if resp.status_code != 200:
                        await resp.aread()
                        self.record(name, start, f"http_{resp.status_code}", detail=resp.text)
                        return
                    lines = [line async for line in resp.aiter_lines()]
                text, error, message = sse_text(lines)
                if error:
                    self.record(name, start, f"sse_{error}", detail=message)
                    return
            else:
                resp = await self.http.post(path, json=body, headers=self.user)
                if resp.status_code != 200:
                    self.record(name, start, f"http_{resp.status_code}", detail=resp.text)
                    return
                choice = resp.json()["choices"][0]
                text = choice["message"]["content"] if chat else choice["text"]
        except httpx.HTTPError as exc:
            self.record(name, start, type(exc).__name__, detail=repr(exc))
            return
        self.check(name, kind, prompt, text, start, allowed)

    async def rag(self) -> None:
        body = {
            "model": self.rng.choice(self.soak.models),
            "messages": [{"role": "user", "content": "How long is the return window?"}],
            "max_tokens": 16,
            "rag": {"collection": "rb-kb", "top_k": 2},
        }
        await self.simple(
            "rag",
            "POST",
            "/v1/chat/completions",
            body,
            self.user,
            lambda d: bool(d["choices"][0]["message"]["citations"]),
        )

    async def simple(
        self, kind: str, method: str, path: str, body: Any, headers: dict[str, str], ok: Any = None
    ) -> None:
        start = time.monotonic()
        try:
            resp = await self.http.request(method, path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            self.record(kind, start, type(exc).__name__)
            return
        if resp.status_code >= 300:
            self.record(kind, start, f"http_{resp.status_code}", detail=resp.text)
        elif ok is not None and not ok(resp.json()):
            self.record(kind, start, "bad_answer")
        else:
            self.record(kind, start, "ok")

    async def ingest(self) -> None:
        doc = {
            "id": f"extra-{self.rng.randrange(10**6)}",
            "text": f"Note {self.rng.random():.6f}: keep receipts.",
        }
        await self.simple(
            "ingest", "POST", "/v1/collections/rb-kb2/documents", {"documents": [doc]}, self.admin
        )

    async def search(self) -> None:
        body = {"collection": "rb-kb", "query": "free shipping", "top_k": 3}
        await self.simple("search", "POST", "/v1/retrieve", body, self.user, lambda d: bool(d["data"]))

    async def admin_change(self) -> None:
        if self.rng.random() < 0.5:
            target = self.rng.choice(["rb-a1@1", "rb-a2@1"])
            await self.simple("alias", "PUT", "/v1/aliases/rb-live", {"target": target}, self.admin)
            return
        start = time.monotonic()
        try:
            resp = await self.http.post(
                "/v1/adapters", json={"name": self.extra_adapter, "path": "rb-a3"}, headers=self.admin
            )
            if resp.status_code == 201:
                resp = await self.http.delete(f"/v1/adapters/{self.extra_adapter}", headers=self.admin)
            failed = "" if resp.is_success else resp.text
            self.record(
                "adapter_add_remove", start, f"http_{resp.status_code}" if failed else "ok", detail=failed
            )
        except httpx.HTTPError as exc:
            self.record("adapter_add_remove", start, type(exc).__name__)

    async def disconnect(self) -> None:
        body = {
            "model": self.rng.choice(self.soak.models),
            "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}],
            "max_tokens": 400,
            "ignore_eos": True,
            "stream": self.rng.random() < 0.5,
        }
        start = time.monotonic()
        try:
            if body["stream"]:
                async with self.http.stream(
                    "POST", "/v1/chat/completions", json=body, headers=self.user
                ) as resp:
                    if resp.status_code != 200:
                        await resp.aread()
                        self.record("disconnect", start, f"http_{resp.status_code}")
                        return
                    async for _ in resp.aiter_lines():
                        break  # the client reads one event and goes away
            else:
                resp = await self.http.post("/v1/chat/completions", json=body, headers=self.user, timeout=1.0)
                self.record(
                    "disconnect", start, "ok" if resp.status_code == 200 else f"http_{resp.status_code}"
                )
                return  # answered within the second (an error, most likely): not a disconnect
        except httpx.ReadTimeout:
            pass
        except httpx.HTTPError as exc:
            self.record("disconnect", start, type(exc).__name__)
            return
        self.record("disconnect", start, "disconnected")

    async def worker(self) -> None:
        actions = [
            (30, lambda: self.generate(stream=True, chat=True)),
            (25, lambda: self.generate(stream=False, chat=True)),
            (8, lambda: self.generate(stream=True, chat=False)),
            (8, lambda: self.generate(stream=False, chat=False)),
            (8, self.rag),
            (5, self.search),
            (3, self.ingest),
            (5, self.admin_change),
            (4, self.disconnect),
        ]
        weights = [w for w, _ in actions]
        while not self.soak.stop:
            (_, action) = self.rng.choices(actions, weights=weights)[0]
            await action()
            if self.last not in ("ok", "disconnected"):
                # As a client honouring Retry-After would: no tight loop of failures during an outage.
                await asyncio.sleep(self.rng.uniform(0.5, 1.0))


# ---- faults ------------------------------------------------------------------------------------------------------


def wait_adapters(url: str, adapters: list[str], timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all_adapters_loaded(url, adapters):
        time.sleep(0.1)
    return time.monotonic()


def kill_engine(gateway: subprocess.Popen[bytes], soak: Soak, adapters: list[str]) -> Fault:
    """SIGKILL the api_server; time /ready turning 503 (polled every 10 ms), orphans 5 s later, ready again,
    every adapter re-applied."""
    api_server, children = engine_tree(gateway)
    assert api_server is not None, "no engine process under the gateway"
    fault = Fault("engine_kill", time.monotonic(), [api_server, *children])
    with httpx.Client(base_url=soak.url, timeout=2) as http:  # one kept-alive connection: no connect per poll
        http.get("/ready")
        os.kill(api_server, signal.SIGKILL)
        fault.killed_at = time.monotonic()
        while fault.unavailable_at is None and time.monotonic() - fault.killed_at < 30:
            if http.get("/ready").status_code == 503:
                fault.unavailable_at = time.monotonic()
            time.sleep(0.005)
    time.sleep(max(0.0, fault.killed_at + 5 - time.monotonic()))
    fault.orphans = count_alive(children)
    fault.ready_at = wait_ready(soak.url, 900, poll=0.1)
    fault.adapters_at = wait_adapters(soak.url, adapters, 300)
    return fault


def restart_gateway(
    gateway: subprocess.Popen[bytes], config: Path, log: Path, soak: Soak, adapters: list[str]
) -> tuple[Fault, subprocess.Popen[bytes]]:
    api_server, children = engine_tree(gateway)
    tree = [p for p in [api_server, *children] if p is not None]
    fault = Fault("gateway_kill", time.monotonic(), [gateway.pid, *tree])
    gateway.kill()
    gateway.wait()
    fault.killed_at = time.monotonic()
    fault.unavailable_at = fault.killed_at
    time.sleep(5)
    fault.orphans = count_alive(tree)
    new = start_gateway_process(config, log)
    fault.ready_at = wait_ready(soak.url, 900, poll=0.1)
    fault.adapters_at = wait_adapters(soak.url, adapters, 300)
    return fault, new


# ---- setup -------------------------------------------------------------------------------------------------------


def setup(url: str, adapters: dict[str, Path]) -> tuple[dict[tuple[str, str, str], str], list[str]]:
    admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=300)
    for name, path in adapters.items():
        resp = admin.post("/v1/adapters", json={"name": name, "path": str(path)})
        if resp.status_code not in (201, 409):
            raise RuntimeError(f"registering {name}: {resp.text}")
    admin.put("/v1/aliases/rb-live", json={"target": "rb-a1@1"}).raise_for_status()
    for collection in ("rb-kb", "rb-kb2"):
        if admin.post("/v1/collections", json={"name": collection}).status_code not in (201, 409):
            raise RuntimeError(f"creating {collection}")
    admin.post("/v1/collections/rb-kb/documents", json={"documents": DOCS}).raise_for_status()
    models = [BASE, *adapters]
    refs: dict[tuple[str, str, str], str] = {}
    for model in models:  # sequential greedy references
        for prompt in PROMPTS:
            chat = admin.post(
                "/v1/chat/completions",
                json={
                    "model": model,
                    "messages": [{"role": "user", "content": prompt}],
                    "temperature": 0,
                    "max_tokens": MAX_TOKENS,
                },
            )
            chat.raise_for_status()
            refs[("chat", model, prompt)] = chat.json()["choices"][0]["message"]["content"]
            text = admin.post(
                "/v1/completions",
                json={"model": model, "prompt": prompt, "temperature": 0, "max_tokens": MAX_TOKENS},
            )
            text.raise_for_status()
            refs[("completion", model, prompt)] = text.json()["choices"][0]["text"]
    admin.close()
    return refs, models


def classify(outcomes: list[Outcome], faults: list[Fault]) -> dict[str, Any]:
    """Failures inside an outage window (kill → ready again, plus 2 s) that say so (503, a refused or dropped
    connection while the gateway itself was down) are expected; every other failure is not."""
    windows = [(f.kind, f.killed_at - 0.05, (f.ready_at or f.killed_at) + 2.0) for f in faults]
    classes: dict[str, int] = {}
    unexpected = 0
    details: list[dict[str, Any]] = []
    for o in outcomes:
        if o.result in ("ok", "disconnected"):
            continue
        in_outage = [kind for kind, lo, hi in windows if o.start <= hi and o.end >= lo]
        expected = bool(in_outage) and (
            o.result in ("http_503", "sse_service_unavailable_error")
            or (
                "gateway_kill" in in_outage
                and o.result in ("ConnectError", "RemoteProtocolError", "ReadError")
            )
        )
        label = f"{'expected' if expected else 'unexpected'}:{o.kind}:{o.result}"
        classes[label] = classes.get(label, 0) + 1
        unexpected += not expected
        if not expected and len(details) < 20:
            # Where it fell relative to each fault (seconds after the kill; negative: before it) and what it said.
            since = {f"{f.kind}@{i}": round(o.start - f.killed_at, 2) for i, f in enumerate(faults)}
            details.append(
                {"kind": o.kind, "result": o.result, "seconds_after_faults": since, "detail": o.detail}
            )
    return {
        "by_class": dict(sorted(classes.items())),
        "unexpected_failures": unexpected,
        "unexpected_details": details,
    }


def sample_rss(
    gateway_ref: list[subprocess.Popen[bytes]], samples: list[tuple[float, int, int]], stop: list[bool]
) -> None:
    while not stop:
        try:
            gateway = psutil.Process(gateway_ref[0].pid)
            engine = sum(p.memory_info().rss for p in gateway.children(recursive=True))
            samples.append((time.monotonic(), gateway.memory_info().rss, engine))
        except psutil.Error:
            pass
        time.sleep(5)


async def soak_traffic(soak: Soak, seconds: float, workers: int, seed: int) -> None:
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=soak.url, timeout=120, limits=limits) as http:
        traffic = [Traffic(soak, http, i, seed) for i in range(workers)]
        tasks = [asyncio.create_task(t.worker()) for t in traffic]
        await asyncio.sleep(seconds)
        soak.stop = True
        await asyncio.gather(*tasks, return_exceptions=True)


def run_soak(args: argparse.Namespace, work: Path, base_path: str) -> dict[str, Any]:
    adapter_root = work / "adapters"
    made = make_adapters(base_path, adapter_root / "made", 3, 8)
    adapters = {}
    for i, (_, path) in enumerate(sorted(made.items())):
        name = f"rb-a{i + 1}"
        shutil.copytree(path, adapter_root / name, dirs_exist_ok=True)
        adapters[name] = adapter_root / name
    extra = adapters.pop("rb-a3")  # registered and removed during the soak
    assert extra.is_dir()
    gateway_port, engine_port = free_port(), free_port()
    config = write_config(work, gateway_port, engine_port, adapter_root)
    log = work / "gateway.log"
    url = f"http://127.0.0.1:{gateway_port}"
    gateway = [start_gateway_process(config, log)]
    started = time.monotonic()
    wait_ready(url, 900)
    console.print(f"gateway + engine ready in {time.monotonic() - started:.0f} s")
    refs, models = setup(url, adapters)
    distinct = sum(len({refs[("chat", m, p)] for m in models}) == len(models) for p in PROMPTS)
    soak = Soak(url=url, refs=refs, models=models, warm_from=time.monotonic() + 60)
    names = [f"{n}@1" for n in adapters]
    samples: list[tuple[float, int, int]] = []
    stop_sampling: list[bool] = []
    sampler = threading.Thread(target=sample_rss, args=(gateway, samples, stop_sampling), daemon=True)
    sampler.start()
    duration = args.minutes * 60

    def inject() -> None:
        # The gateway restart first, so that the longest stretch of one gateway process follows it (RSS growth).
        # Each fault waits for the previous outage to end and leaves the service 30 s of normal traffic.
        plan = [("gateway", 0.15)]
        plan += [("engine", 0.3 + 0.55 * i / max(1, args.engine_kills)) for i in range(args.engine_kills)]
        t0 = time.monotonic()
        for kind, at in plan:
            time.sleep(max(0.0, t0 + at * duration - time.monotonic()))
            if soak.stop or time.monotonic() - t0 > duration - 30:
                console.print(f"[red]{kind} kill skipped: the soak is over[/red]")
                continue
            console.print(f"[yellow]{kind} kill at {time.monotonic() - t0:.0f} s[/yellow]")
            if kind == "gateway":
                fault, gateway[0] = restart_gateway(gateway[0], config, log, soak, names)
                soak.warm_from = time.monotonic() + 60
            else:
                fault = kill_engine(gateway[0], soak, names)
            soak.faults.append(fault)
            time.sleep(30)

    injector = threading.Thread(target=inject, daemon=True)
    soak_started = time.monotonic()
    injector.start()
    asyncio.run(soak_traffic(soak, duration, args.workers, args.seed))
    injector.join()
    stop_sampling.append(True)
    sampler.join(10)

    warm_from = soak.warm_from
    last_fault = max((f.ready_at or f.killed_at for f in soak.faults), default=warm_from)
    gw_samples = [(t, g) for t, g, _ in samples if t >= warm_from]
    rss_growth = (gw_samples[-1][1] - gw_samples[0][1]) / gw_samples[0][1] if len(gw_samples) > 1 else None
    engine_samples = [(t, e) for t, _, e in samples if t >= last_fault + 60]
    classes = classify(soak.outcomes, soak.faults)
    engine_faults = [f for f in soak.faults if f.kind == "engine_kill"]
    kill_to_503 = [(f.unavailable_at - f.killed_at) * 1000 for f in engine_faults if f.unavailable_at]
    result = {
        "minutes": args.minutes,
        "workers": args.workers,
        "requests_sent": len(soak.outcomes),
        "ok": sum(o.result == "ok" for o in soak.outcomes),
        "client_disconnects": sum(o.result == "disconnected" for o in soak.outcomes),
        "by_kind": {
            k: sum(o.kind == k for o in soak.outcomes) for k in sorted({o.kind for o in soak.outcomes})
        },
        **classes,
        "wrong_outputs": sum(o.result == "wrong_output" for o in soak.outcomes),
        "misrouted_outputs": sum(o.misrouted for o in soak.outcomes),
        "prompts_with_distinct_outputs_per_model": f"{distinct}/{len(PROMPTS)}",
        "orphans": sum(f.orphans for f in soak.faults),
        "kill_to_503_ms": [round(v, 1) for v in kill_to_503],
        "kill_to_503_ms_p95": round(percentile(kill_to_503, 95), 1) if kill_to_503 else None,
        "kill_to_ready_s": [round((f.ready_at or f.killed_at) - f.killed_at, 1) for f in engine_faults],
        "kill_to_adapters_reapplied_s": [
            round((f.adapters_at or f.killed_at) - f.killed_at, 1) for f in engine_faults
        ],
        "gateway_restart_to_ready_s": [
            round((f.ready_at or f.killed_at) - f.killed_at, 1)
            for f in soak.faults
            if f.kind == "gateway_kill"
        ],
        "faults": [
            {
                "kind": f.kind,
                "at_s": round(f.killed_at - soak_started, 1),
                "processes": len(f.pids),
                "orphans": f.orphans,
                "to_unavailable_ms": round(((f.unavailable_at or f.killed_at) - f.killed_at) * 1000, 1),
                "to_ready_s": round((f.ready_at or f.killed_at) - f.killed_at, 1),
                "to_adapters_s": round((f.adapters_at or f.killed_at) - f.killed_at, 1),
            }
            for f in soak.faults
        ],
        "gateway_rss_mib": [round(g / 2**20, 1) for _, g in gw_samples[:: max(1, len(gw_samples) // 12)]],
        "rss_growth": round(rss_growth, 4) if rss_growth is not None else None,
        "engine_rss_mib_last_life": [
            round(e / 2**20, 1) for _, e in engine_samples[:: max(1, len(engine_samples) // 6)]
        ],
    }
    gateway[0].send_signal(signal.SIGTERM)  # a clean stop also stops its engine
    try:
        gateway[0].wait(120)
    except subprocess.TimeoutExpired:
        gateway[0].kill()
    return result


def run_fuzz(args: argparse.Namespace, work: Path, base_path: str) -> dict[str, Any]:
    """A gateway with an embedded engine and max_tokens capped at 4, fuzzed with a large budget."""
    adapter_root = work / "fuzz-adapters"
    made = make_adapters(base_path, adapter_root / "made", 1, 8)
    path = next(iter(made.values()))
    settings = Settings(
        engine=ENGINE.model_copy(update={"port": free_port()}),
        server=ServerSettings(
            port=free_port(),
            api_keys=[USER_KEY],
            admin_keys=[ADMIN_KEY],
            state_dir=work / "fuzz-state",
            adapter_roots=[adapter_root],
            default_max_tokens=4,
            max_tokens_limit=4,
        ),
    )
    gateway = BackgroundGateway(settings)
    gateway.start()
    try:
        wait_ready(gateway.url, 900)
        report = run_schemathesis(
            gateway.url,
            ADMIN_KEY,
            work / "fuzz",
            seed=args.seed,
            max_examples=args.fuzz_examples,
            parameters=seed_resources(gateway.url, ADMIN_KEY, path, BASE),
            timeout_s=3600,
        )
    finally:
        gateway.stop()
    return {
        "fuzz_cases": report.cases,
        "fuzz_operations": f"{report.operations_tested}/{report.operations}",
        "fuzz_5xx": report.server_errors,
        "fuzz_failures": report.failures,
        "fuzz_errors": report.errors,
        "fuzz_seconds": round(report.seconds, 1),
        "fuzz_examples_per_operation": args.fuzz_examples,
    }


SOAK_FIGURES = (
    "requests_sent",
    "unexpected_failures",
    "wrong_outputs",
    "orphans",
    "kill_to_503_ms_p95",
    "kill_to_ready_s",
    "rss_growth",
)


def _previous_results() -> dict[str, Any]:
    path = RESULTS / "reliability.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--engine-kills", type=int, default=3)
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--fuzz-examples", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--skip-soak", action="store_true", help="keep the soak figures of the previous result file"
    )
    parser.add_argument(
        "--skip-fuzz", action="store_true", help="keep the fuzz figures of the previous result file"
    )
    parser.add_argument("--work", type=Path, default=ragswap_home() / "bench-reliability")
    parser.add_argument("--note", default="", help="recorded with the results (e.g. what else ran meanwhile)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    provenance = machine()  # before anything is written
    shutil.rmtree(args.work / "state", ignore_errors=True)
    shutil.rmtree(args.work / "fuzz-state", ignore_errors=True)
    args.work.mkdir(parents=True, exist_ok=True)
    base_path = resolve_model(BASE, ModelSettings())
    started = time.perf_counter()
    results: dict[str, Any] = {"machine": provenance, "note": args.note}
    previous = _previous_results()
    if args.skip_soak and "soak" in previous:  # the parts run separately (each under the heavy-work lock)
        results["soak"] = {**previous["soak"], "from_previous_run": previous["machine"]}
        for key in SOAK_FIGURES:
            results[key] = previous["soak"][key]
    if args.skip_fuzz and "fuzz" in previous:
        results["fuzz"] = {**previous["fuzz"], "from_previous_run": previous["machine"]}
        results["fuzz_cases"], results["fuzz_5xx"] = previous["fuzz_cases"], previous["fuzz_5xx"]
    if not args.skip_soak:
        soak = run_soak(args, args.work, base_path)
        results["soak"] = soak
        for key in SOAK_FIGURES:
            results[key] = soak[key]
    if not args.skip_fuzz:
        fuzz = run_fuzz(args, args.work, base_path)
        results["fuzz"] = fuzz
        results["fuzz_cases"], results["fuzz_5xx"] = fuzz["fuzz_cases"], fuzz["fuzz_5xx"]
    results["wall_minutes"] = round((time.perf_counter() - started) / 60, 1)
    path = write_results("reliability", results)
    table = Table(title="reliability")
    table.add_column("figure")
    table.add_column("value")
    for key, value in results.items():
        if key not in ("machine", "soak", "fuzz"):
            table.add_row(key, json.dumps(value))
    console.print(table)
    console.print(f"written {path}")


if __name__ == "__main__":
    main()
