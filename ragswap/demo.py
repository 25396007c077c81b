"""``ragswap demo``: the whole flow a user cares about, on the embedded default, with the commands a user types.

1. prepare the offline models;
2. ``ragswap serve``: the gateway plus one embedded vLLM engine (CPU build, multi-LoRA on);
3. ask the base model about a fictional company (it cannot know);
4. ``ragswap train RECIPE --register URL``: train a LoRA on the company's facts and hot-load it, no restart;
5. ask the adapter the same kind of question through the official ``openai`` client;
6. ingest the company handbook into a collection and ask a RAG question with citations through the adapter;
7. ``ragswap eval run``: check the judge on its calibration set, score the adapter against the base model with
   RAGAS and IR metrics (paired over the same questions), print the verdict and write an HTML report;
8. ``ragswap eval gate``: decide whether the adapter beats the base model (the demo shows the decision either way);
9. ``ragswap adapters alias support quillfeather@1``: users call the alias; ``ragswap train … --promote support``
   retrains (version 2) and moves the alias onto it only through the evaluation gate (paired against version 1 on
   the same questions), in two steps; ``ragswap adapters history support`` shows the recorded decision.

Everything lives under ``$RAGSWAP_HOME/demo`` and is rebuilt on each run.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from openai import OpenAI
from rich.console import Console
from rich.panel import Panel

from ragswap.config import Settings
from ragswap.model_store import prepare_models
from ragswap.settings_base import ragswap_home

ADAPTER = "quillfeather"
ALIAS = "support"
COLLECTION = "handbook"
FACT_QUESTION = "Who founded Quillfeather Robotics?"
RAG_QUESTION = "How long does the Heron-7 run on one charge?"
GATE = ("rouge_l>base", "semantic_similarity>=base-0.05", "ndcg>=base-0.05")
"""What the adapter must show to replace the base model: detectably closer to the references (ROUGE-L, paired over
the same questions), no worse in meaning or retrieval. The judged metrics are shown with their judge check."""
PROMOTION_GATE = ("rouge_l>=base-0.05", "semantic_similarity>=base-0.05", "ndcg>=base-0.05")
"""What a retrained version must show to replace the one users get: no worse than it (paired, same questions)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ragswap(*args: str) -> list[str]:
    return [sys.executable, "-m", "ragswap.cli", *args]


def _demo_env(work: Path, port: int, admin_key: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "RAGSWAP_SERVER__PORT": str(port),
            "RAGSWAP_SERVER__API_KEYS": json.dumps([admin_key]),
            "RAGSWAP_SERVER__ADMIN_KEYS": json.dumps([admin_key]),
            "RAGSWAP_SERVER__STATE_DIR": str(work / "state"),
            "RAGSWAP_SERVER__ADAPTER_ROOTS": json.dumps([str(work / "adapters")]),
            "RAGSWAP_ENGINE__PORT": str(_free_port()),
            "RAGSWAP_EVAL__RUNS_DIR": str(work / "eval-runs"),
            "RAGSWAP_API_KEY": admin_key,
            "RAGSWAP_LOG_LEVEL": "WARNING",
            "HF_HUB_OFFLINE": "1",
        }
    )
    return env


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ragswap serve exited with code {proc.returncode}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError("ragswap serve did not become ready in time")


def _ask(client: OpenAI, model: str, question: str, **extra: object) -> tuple[str, list[dict[str, object]]]:
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        temperature=0,
        max_tokens=64,
        extra_body=extra or None,
    )
    message = reply.choices[0].message
    citations = (message.model_extra or {}).get("citations") or []
    return message.content or "", citations


def _write_recipe(path: Path, base: str, data: Path, output_dir: Path, epochs: int, seed: int) -> Path:
    """The LoRA recipe the demo trains on the company facts (docs/training.md)."""
    lines = [
        f"base_model: {base}",
        "adapter: lora",
        "lora_r: 16",
        "lora_alpha: 32",
        "lora_dropout: 0.0",
        "datasets:",
        f"  - path: {data / 'facts.jsonl'}",
        "    type: chat",
        f"num_epochs: {epochs}",
        "learning_rate: 2.0e-3",
        "micro_batch_size: 4",
        "max_seq_length: 128",
        f"seed: {seed}",
        f"output_dir: {output_dir}",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_demo(settings: Settings, console: Console) -> None:
    data = Path(__file__).resolve().parent / "demo_data"
    work = ragswap_home() / "demo"
    shutil.rmtree(work, ignore_errors=True)
    (work / "adapters").mkdir(parents=True)
    port = _free_port()
    admin_key = "sk-demo-" + secrets.token_hex(12)
    url = f"http://127.0.0.1:{port}"
    env = _demo_env(work, port, admin_key)

    console.rule("1. offline models")
    for model in prepare_models(settings.models):
        console.print(f"{model.name}: {model.path} ({'reused' if model.reused else 'prepared'})")

    console.rule("2. ragswap serve (gateway + embedded vLLM engine)")
    log = (work / "serve.log").open("wb")
    start = time.perf_counter()
    server = subprocess.Popen(_ragswap("serve"), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_ready(url, server)
        console.print(f"ready at {url} in {time.perf_counter() - start:.0f}s (log: {work / 'serve.log'})")
        client = OpenAI(base_url=f"{url}/v1", api_key=admin_key)
        base = settings.models.base_model

        console.rule("3. the base model does not know the company")
        answer, _ = _ask(client, base, FACT_QUESTION)
        console.print(f"[bold]{base}[/bold] > {FACT_QUESTION}\n  {answer}")

        console.rule("4. train a LoRA on the company facts and hot-load it (no restart)")
        recipe = _write_recipe(work / "quillfeather.yaml", base, data, work / "adapters" / ADAPTER, 12, 42)
        subprocess.run(
            _ragswap("train", str(recipe), "--register", url, "--name", ADAPTER), env=env, check=True
        )
        models = [m.id for m in client.models.list().data]
        console.print(f"/v1/models: {models}")

        console.rule("5. the adapter answers, selected per request by `model`")
        answer, _ = _ask(client, ADAPTER, FACT_QUESTION)
        console.print(f"[bold]{ADAPTER}[/bold] > {FACT_QUESTION}\n  {answer}")

        console.rule("6. RAG with citations through the adapter")
        admin = {"Authorization": f"Bearer {admin_key}"}
        with httpx.Client(base_url=url, headers=admin, timeout=600) as http:
            http.post("/v1/collections", json={"name": COLLECTION}).raise_for_status()
            files = [
                ("file", (doc.name, doc.read_bytes(), "text/markdown"))
                for doc in sorted((data / "handbook").glob("*.md"))
            ]
            ingested = http.post(f"/v1/collections/{COLLECTION}/documents", files=files)
            ingested.raise_for_status()
            console.print(f"ingested: {ingested.json()}")
        answer, citations = _ask(client, ADAPTER, RAG_QUESTION, rag={"collection": COLLECTION, "top_k": 3})
        console.print(f"[bold]{ADAPTER} + rag[/bold] > {RAG_QUESTION}\n  {answer}")
        for cite in citations:
            console.print(
                f"  [{cite.get('source', '?')}] {cite.get('document_id')}: {str(cite.get('text', ''))[:90]}"
            )

        console.rule("7. evaluate the adapter against the base model (judge check, RAGAS + IR, paired)")
        run_dir = work / "eval-run"
        subprocess.run(
            _ragswap(
                "eval",
                "run",
                "--dataset",
                str(data / "eval.jsonl"),
                "--collection",
                COLLECTION,
                "--adapter",
                base,
                "--adapter",
                ADAPTER,
                "--server",
                url,
                "--out",
                str(run_dir),
            ),
            env=env,
            check=True,
        )

        console.rule("8. gate: is the adapter better than the base model?")
        gate = subprocess.run(
            _ragswap(
                "eval",
                "gate",
                str(run_dir),
                "--baseline",
                base,
                "--candidate",
                ADAPTER,
                *[arg for requirement in GATE for arg in ("--require", requirement)],
            ),
            env=env,
        )
        if gate.returncode not in (0, 1):  # 2: the gate could not run, a bug in the demo
            raise RuntimeError(f"ragswap eval gate exited with {gate.returncode}")
        decision = (
            f"[green]promote {ADAPTER}[/green]: it passes every requirement"
            if gate.returncode == 0
            else f"[yellow]keep {base}[/yellow]: {ADAPTER} fails a requirement (see the table)"
        )
        console.print(Panel(f"{decision}\nreport: {run_dir / 'report.html'}", title="gate"))

        console.rule(
            f"9. ship it: users call `{ALIAS}`; a retrained version replaces it only through the gate"
        )
        subprocess.run(
            _ragswap("adapters", "alias", ALIAS, f"{ADAPTER}@1", "--reason", "launch"), env=env, check=True
        )
        retrain = _write_recipe(
            work / "quillfeather-v2.yaml", base, data, work / "adapters" / f"{ADAPTER}-v2", 16, 7
        )
        promote = subprocess.run(
            _ragswap(
                "train",
                str(retrain),
                "--register",
                url,
                "--name",
                ADAPTER,
                "--promote",
                ALIAS,
                "--dataset",
                str(data / "eval.jsonl"),
                "--collection",
                COLLECTION,
                "--steps",
                "50,100",
                *[arg for requirement in PROMOTION_GATE for arg in ("--require", requirement)],
            ),
            env=env,
        )
        if promote.returncode not in (0, 1):  # 1: trained and registered, but the gate kept version 1
            raise RuntimeError(f"ragswap train --promote exited with {promote.returncode}")
        subprocess.run(_ragswap("adapters", "history", ALIAS, "--limit", "4"), env=env, check=True)
        serving = httpx.get(f"{url}/v1/aliases", headers={"Authorization": f"Bearer {admin_key}"}).json()
        targets = next(a["targets"] for a in serving["data"] if a["alias"] == ALIAS)
        outcome = (
            f"[green]{ALIAS} → {ADAPTER}@2[/green]: the retrained version passed the gate (50 %, then 100 %)"
            if promote.returncode == 0
            else f"[yellow]{ALIAS} stays on {ADAPTER}@1[/yellow]: the retrained version failed the gate"
        )
        split = ", ".join(f"{t['target']}={t['weight']}" for t in targets)
        console.print(
            Panel(
                f"{outcome}\nnow serving: {split}\n"
                f"decision: ragswap adapters history {ALIAS} (GET /v1/aliases/{ALIAS}/history)\n"
                f"report: {run_dir / 'report.html'}",
                title="done",
            )
        )
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
