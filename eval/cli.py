"""``ragswap eval run|compare|report``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

eval_app = typer.Typer(help="Evaluate RAG quality: RAGAS and IR metrics, HTML reports.", no_args_is_help=True)
console = Console()


def register(app: typer.Typer) -> None:
    """Add this package's commands to the root `ragswap` command."""
    app.add_typer(eval_app, name="eval")


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


@eval_app.command("run")
def run(
    dataset: Annotated[Path, typer.Option(help="JSONL: ragswap rows or a ragas EvaluationDataset.")],
    adapter: Annotated[
        list[str] | None,
        typer.Option(help="Model or adapter to evaluate (repeat to compare); default: the base model."),
    ] = None,
    collection: Annotated[str | None, typer.Option(help="Collection to retrieve from (RAG on).")] = None,
    retrieval_mode: Annotated[
        list[str] | None, typer.Option(help="hybrid|dense|sparse (repeat: every adapter × every mode).")
    ] = None,
    top_k: Annotated[
        int | None, typer.Option(help="Passages retrieved per question (default eval.k).")
    ] = None,
    server: Annotated[
        str | None, typer.Option(help="ragswap gateway URL (default: server.host:server.port).")
    ] = None,
    api_key: Annotated[str | None, typer.Option(envvar="RAGSWAP_API_KEY", help="Gateway API key.")] = None,
    judge_url: Annotated[str | None, typer.Option(help="Judge endpoint (default: the gateway).")] = None,
    judge_model: Annotated[str | None, typer.Option(help="Judge model (default: the base model).")] = None,
    structured: Annotated[
        bool | None, typer.Option("--structured/--no-structured", help="json_schema response_format.")
    ] = None,
    metric: Annotated[list[str] | None, typer.Option(help="Metrics (repeat); default eval.metrics.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default eval.runs_dir/<run id>).")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N samples.")] = None,
    score_only: Annotated[
        bool, typer.Option(help="Score the dataset's own responses/contexts; call no server for answers.")
    ] = False,
) -> None:
    """Retrieve, answer and score every sample for every adapter/config; write traces, summary and report."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from eval.dataset import DatasetError, load_dataset
    from eval.jobs import EvalRequest, prepare_run

    try:
        samples = load_dataset(dataset)
    except DatasetError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    if limit:
        samples = samples[:limit]
    try:
        request = EvalRequest(
            dataset_name=str(dataset),
            samples=samples,
            adapters=adapter or [],
            collection=collection,
            retrieval_modes=retrieval_mode or [],  # type: ignore[arg-type]
            top_k=top_k,
            metrics=metric,
            judge_url=judge_url,
            judge_model=judge_model,
            structured_output=structured,
            score_only=score_only,
        )
        prepared = prepare_run(request, server_url=server, api_key=api_key, out=out)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    with Progress(
        TextColumn("[bold]evaluating"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("eval", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        summary = asyncio.run(prepared.execute(progress))
    _print_summary(summary)
    console.print(f"run directory: {prepared.run_dir}  (report: {prepared.run_dir / 'report.html'})")


def _print_summary(summary: object) -> None:
    from eval.records import RunSummary

    assert isinstance(summary, RunSummary)
    table = Table("metric", *summary.results.keys(), title=f"run {summary.run_id}")
    for metric in summary.metrics:
        cells = []
        for config in summary.results:
            s = summary.results[config][metric]
            cell = f"{_fmt(s.mean)} [{_fmt(s.ci_low)}, {_fmt(s.ci_high)}] n={s.n_ok}"
            if s.n_failed:
                cell += f" [red]failed={s.n_failed}[/red]"
            cells.append(cell)
        table.add_row(metric, *cells)
    console.print(table)


@eval_app.command("compare")
def compare(
    run_a: Annotated[Path, typer.Argument(help="Baseline run directory.")],
    run_b: Annotated[Path, typer.Argument(help="Candidate run directory.")],
) -> None:
    """Metric deltas B − A per config (marked * when the 95 % CIs do not overlap)."""
    from eval.compare import compare_runs

    for path in (run_a, run_b):
        if not (path / "summary.json").is_file():
            console.print(f"[red]error:[/red] {path} is not a run directory (no summary.json)")
            raise typer.Exit(2)
    try:
        deltas = compare_runs(run_a, run_b)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    table = Table("config", "metric", "A", "B", "Δ (B−A)", "failed A/B", title=f"{run_a.name} → {run_b.name}")
    for d in deltas:
        delta = d.delta
        colour = "green" if delta and delta > 0 else "red" if delta and delta < 0 else "white"
        text = "–" if delta is None else f"[{colour}]{delta:+.3f}{' *' if d.significant else ''}[/{colour}]"
        config = d.config_a if d.config_a == d.config_b else f"{d.config_a} → {d.config_b}"
        table.add_row(
            config, d.metric, _fmt(d.a.mean), _fmt(d.b.mean), text, f"{d.a.n_failed}/{d.b.n_failed}"
        )
    console.print(table)


@eval_app.command("report")
def report(run_dir: Annotated[Path, typer.Argument(help="Run directory.")]) -> None:
    """(Re)build ``report.html`` of a run directory from its traces."""
    from eval.report import write_report

    if not (run_dir / "summary.json").is_file():
        console.print(f"[red]error:[/red] {run_dir} is not a run directory (no summary.json)")
        raise typer.Exit(2)
    console.print(f"wrote {write_report(run_dir)}")
