"""The ``ragswap`` command, composed here from what each package contributes.

Each package exports its commands as typer apps in its ``__all__`` (``cli_app``: its top-level commands and
groups; ``adapters_app``: its part of the shared ``ragswap adapters`` group). This module adds them; no package
adds commands to another package's app.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from eval import cli_app as eval_cli_app
from ragswap.config import load_settings
from ragswap.log import configure_logging
from retrieval import cli_app as retrieval_cli_app
from serving import adapters_app as serving_adapters_app
from serving import cli_app as serving_cli_app
from training import adapters_app as training_adapters_app
from training import cli_app as training_cli_app

app = typer.Typer(
    help="ragswap: hot-swappable LoRA serving, hybrid RAG, training and evaluation.", no_args_is_help=True
)
models_app = typer.Typer(help="The offline model store.", no_args_is_help=True)
config_app = typer.Typer(help="Configuration.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(config_app, name="config")
console = Console()


@app.callback()
def _root(
    log_level: Annotated[str, typer.Option(envvar="RAGSWAP_LOG_LEVEL", help="Logging level.")] = "INFO",
) -> None:
    configure_logging(log_level)


@models_app.command("prepare")
def models_prepare(
    names: Annotated[
        list[str] | None, typer.Argument(help="Catalog names (default: configured models).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even when a verified copy exists.")] = False,
) -> None:
    """Convert/copy the offline models into the model store (idempotent, checksummed)."""
    from ragswap.model_store import ModelStoreError, prepare_models

    settings = load_settings()
    try:
        prepared = prepare_models(settings.models, names, force=force)
    except ModelStoreError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    for model in prepared:
        state = "reused" if model.reused else f"prepared in {model.seconds:.1f}s"
        console.print(f"{model.name}: {model.path} ({state})")


@models_app.command("list")
def models_list() -> None:
    """Show the offline catalog and what is prepared."""
    from ragswap.model_store import CATALOG, verify_model

    settings = load_settings()
    table = Table("name", "kind", "path", "state")
    for model in CATALOG.values():
        path = settings.models.dir / model.dirname
        problems = verify_model(path) if path.is_dir() else ["not prepared"]
        table.add_row(model.name, model.kind, str(path), "ok" if not problems else problems[0])
    console.print(table)


@models_app.command("verify")
def models_verify() -> None:
    """Recompute every checksum of the prepared models."""
    from ragswap.model_store import CATALOG, verify_model

    settings = load_settings()
    failed = False
    for model in CATALOG.values():
        path = settings.models.dir / model.dirname
        if not path.is_dir():
            continue
        problems = verify_model(path, deep=True)
        failed |= bool(problems)
        console.print(f"{model.name}: " + ("ok" if not problems else "; ".join(problems)))
    if failed:
        raise typer.Exit(1)


@config_app.command("show")
def config_show() -> None:
    """Print the effective configuration (secrets masked)."""
    console.print_json(load_settings().model_dump_json())


@app.command("engine")
def engine(
    log_file: Annotated[Path | None, typer.Option(help="Write the engine's output here.")] = None,
) -> None:
    """Run the configured base model in one vLLM engine (LoRA on, loopback) until interrupted."""
    from ragswap.model_store import resolve_model
    from serving import EngineProcess

    settings = load_settings()
    model_path = resolve_model(settings.models.base_model, settings.models)
    proc = EngineProcess(settings.engine, model_path, settings.models.base_model, log_path=log_file)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    proc.start()
    try:
        proc.wait_ready()
        console.print(json.dumps({"engine": proc.url, "model": settings.models.base_model, "pid": proc.pid}))
        while not stop.wait(1.0):
            if not proc.running():
                raise typer.Exit(1)
    except KeyboardInterrupt:
        pass
    finally:
        proc.stop()


@app.command("demo")
def demo() -> None:
    """The whole flow on the embedded default, end to end."""
    from ragswap.demo import run_demo

    run_demo(load_settings(), console)


adapters_app = typer.Typer(
    help="Adapters: a running gateway's registry (list, push, alias, ...) and local merge/export.",
    no_args_is_help=True,
)
for part in (serving_adapters_app, training_adapters_app):
    adapters_app.add_typer(part)
app.add_typer(adapters_app, name="adapters")
for package_app in (serving_cli_app, training_cli_app, retrieval_cli_app, eval_cli_app):
    app.add_typer(package_app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
