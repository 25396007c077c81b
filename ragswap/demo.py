"""``ragswap demo``: the user-facing flow on the embedded default, one step after another."""

from __future__ import annotations

import time

from openai import OpenAI
from rich.console import Console

from ragswap.config import Settings
from ragswap.model_store import prepare_models, resolve_model
from serving.engine import EngineProcess


def run_demo(settings: Settings, console: Console) -> None:
    console.rule("1. models")
    for model in prepare_models(settings.models):
        console.print(f"{model.name}: {model.path} ({'reused' if model.reused else 'prepared'})")

    console.rule("2. vLLM engine (CPU build, multi-LoRA on)")
    model_path = resolve_model(settings.models.base_model, settings.models)
    log_path = settings.server.state_dir / "logs" / "demo-engine.log"
    engine = EngineProcess(settings.engine, model_path, settings.models.base_model, log_path=log_path)
    start = time.perf_counter()
    engine.start()
    try:
        engine.wait_ready()
        console.print(f"engine ready at {engine.url} in {time.perf_counter() - start:.0f}s (log: {log_path})")

        console.rule("3. chat through the engine's OpenAI endpoint")
        client = OpenAI(base_url=f"{engine.url}/v1", api_key="unused")
        question = "What is the capital of France?"
        reply = client.chat.completions.create(
            model=settings.models.base_model,
            messages=[{"role": "user", "content": question}],
            temperature=0,
            max_tokens=32,
        )
        console.print(f"[bold]user:[/bold] {question}")
        console.print(f"[bold]{settings.models.base_model}:[/bold] {reply.choices[0].message.content}")
    finally:
        engine.stop()
