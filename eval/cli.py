"""``ragswap eval run|compare|gate|judge-check|report``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

eval_app = typer.Typer(help="Evaluate RAG quality: RAGAS and IR metrics, HTML reports.", no_args_is_help=True)
cli_app = typer.Typer()
"""``ragswap eval ...``; ``ragswap.cli`` adds it to the root."""
cli_app.add_typer(eval_app, name="eval")
console = Console(soft_wrap=True)  # messages stay whole lines in CI logs; tables still fit the width


def _show(renderable: object) -> None:
    """Print a table; when the output is not a terminal (CI logs, pipes), at least 150 columns wide instead of
    rich's default 80, so that tables are not wrapped into unreadable cells."""
    if console.is_terminal:
        console.print(renderable)
    else:  # rich caps a console's print width at its own width: a wider console for this one table
        Console(width=max(console.width, 150)).print(renderable)


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
    from eval.settings import JUDGED_METRICS
    from ragswap import ModelStoreError, load_settings

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
        prepared = prepare_run(request, load_settings(), server_url=server, api_key=api_key, out=out)
    except (ValueError, ModelStoreError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    judged = [m for m in prepared.spec.metrics if m in JUDGED_METRICS]
    if judged and prepared.settings.judge_check:
        console.print(
            f"checking judge {prepared.judge_model} on the calibration set ({', '.join(judged)}; "
            "once per judge model, cached) ..."
        )
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
    if summary.judge_check is not None:
        _show(_judge_table(summary.judge_check))
    table = Table("metric", *summary.results.keys(), "judge (agreement)", title=f"run {summary.run_id}")
    for metric in summary.metrics:
        cells = []
        agreement = None
        for config in summary.results:
            s = summary.results[config][metric]
            agreement = agreement or s.judge
            cell = f"{_fmt(s.mean)} [{_fmt(s.ci_low)}, {_fmt(s.ci_high)}] n={s.n_ok}"
            if s.n_failed:
                cell += f" [red]failed={s.n_failed}[/red]"
            cells.append(cell)
        table.add_row(metric, *cells, _agreement_cell(agreement))
    _show(table)
    for comparison in summary.comparisons:
        console.print(f"[bold]verdict[/bold] {comparison.verdict_line()}")
    judge = summary.judge
    if judge.context_tokens:
        console.print(
            f"judge window {judge.context_tokens} tokens ({judge.context_source}), prompts ≤ {judge.prompt_limit} "
            f"tokens counted with the {judge.token_counter}; context-overflow failures: "
            f"{summary.context_overflow_failures}",
        )
    if summary.samples_per_minute is not None:
        console.print(f"{summary.samples_per_minute:.2f} samples/min, {summary.judge_calls} judge calls")


def _agreement_cell(agreement: object) -> str:
    from eval.records import MetricAgreement

    if not isinstance(agreement, MetricAgreement):
        return "–"
    text = agreement.label()
    return text if agreement.reliable else f"[red]{text}[/red]"


def _judge_table(check: object) -> Table:
    from eval.records import JudgeCheck

    assert isinstance(check, JudgeCheck)
    origin = "cached" if check.cached else f"{check.seconds:.0f} s"
    table = Table(
        "metric",
        "task",
        "items",
        "agreement [95 % CI]",
        "chance",
        "failed",
        "judge",
        title=f"judge check: {check.model} at {check.url} (prompt version {check.prompt_version}, {origin})",
    )
    for name, m in check.metrics.items():
        ci = "–" if m.agreement is None else f"{m.agreement:.2f} [{m.ci_low:.2f}, {m.ci_high:.2f}]"
        verdict = "[green]reliable[/green]" if m.reliable else "[red]judge unreliable[/red]"
        table.add_row(name, m.task, str(m.n), ci, f"{m.chance:.2f}", str(m.n_failed), verdict)
    return table


@eval_app.command("compare")
def compare(
    run_a: Annotated[Path, typer.Argument(help="Baseline run directory.")],
    run_b: Annotated[Path, typer.Argument(help="Candidate run directory.")],
) -> None:
    """Paired deltas B − A per config and metric over the samples both runs scored, with verdicts."""
    from eval.compare import compare_runs

    for path in (run_a, run_b):
        if not (path / "summary.json").is_file():
            console.print(f"[red]error:[/red] {path} is not a run directory (no summary.json)")
            raise typer.Exit(2)
    try:
        comparisons = compare_runs(run_a, run_b)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    for comparison in comparisons:
        _show(_comparison_table(comparison))
        console.print(f"[bold]verdict[/bold] {comparison.verdict_line()}")


def _comparison_table(comparison: object) -> Table:
    from eval.records import Comparison

    assert isinstance(comparison, Comparison)
    table = Table(
        "metric",
        "A",
        "B",
        "Δ (B−A) [95 % CI]",
        "Wilcoxon p",
        "B better/worse/tied",
        "pairs",
        "verdict",
        title=f"{comparison.baseline} (A) → {comparison.candidate} (B), paired over the same samples",
    )
    for d in comparison.deltas:
        if d.delta is None:
            delta = "–"
        else:
            colour = {"better": "green", "worse": "red"}.get(d.verdict, "white")
            delta = f"[{colour}]{d.delta:+.3f}[/{colour}] [{d.ci_low:+.3f}, {d.ci_high:+.3f}]"
        p = "–" if d.p_value is None else f"{d.p_value:.3g}"
        verdict = d.verdict + (" [red](judge unreliable)[/red]" if d.judge_unreliable else "")
        table.add_row(
            d.metric,
            _fmt(d.mean_baseline),
            _fmt(d.mean_candidate),
            delta,
            p,
            f"{d.n_better}/{d.n_worse}/{d.n_tied}",
            str(d.n_pairs) + (f" (+{d.n_unpaired} unpaired)" if d.n_unpaired else ""),
            verdict,
        )
    return table


@eval_app.command("gate")
def gate(
    run: Annotated[str, typer.Argument(help="Run directory, or an evaluation job id with --server.")],
    require: Annotated[
        list[str], typer.Option(help="Requirement, e.g. 'faithfulness>=0.7' or 'rouge_l>base+0.02' (repeat).")
    ],
    candidate: Annotated[
        str | None, typer.Option(help="Config under test (default: the only one, or the second of two).")
    ] = None,
    baseline: Annotated[
        str | None, typer.Option(help="Config that `base` means (default: the first).")
    ] = None,
    max_failed: Annotated[
        float, typer.Option(help="Most failed samples (fraction) a required metric may have.")
    ] = 0.1,
    min_pairs: Annotated[int, typer.Option(help="Fewest paired samples a relative requirement accepts.")] = 5,
    allow_unchecked_judge: Annotated[
        bool, typer.Option(help="Accept judged metrics of a run without a judge check.")
    ] = False,
    server: Annotated[
        str | None, typer.Option(help="Gateway URL: gate the evaluation job RUN through its API.")
    ] = None,
    api_key: Annotated[str | None, typer.Option(envvar="RAGSWAP_API_KEY", help="Gateway API key.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the decision as JSON.")] = False,
) -> None:
    """Exit 0 when every requirement holds, 1 (with the table) when one fails, 2 when the gate cannot run.

    Relative requirements use the paired comparison candidate − baseline over the same samples; a judged metric
    with an unreliable judge, or more than --max-failed failed samples, fails its requirement.
    """
    from eval.gate import GateError, GateOptions, GateResult, evaluate_gate
    from eval.runner import read_summary

    try:
        options = GateOptions(
            require=require,
            candidate=candidate,
            baseline=baseline,
            max_failed_fraction=max_failed,
            min_pairs=min_pairs,
            allow_unchecked_judge=allow_unchecked_judge,
        )
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    try:
        if server:
            result = GateResult.model_validate(_remote_gate(server, api_key, run, options))
        else:
            run_dir = Path(run)
            if not (run_dir / "summary.json").is_file():
                console.print(f"[red]error:[/red] {run_dir} is not a run directory (no summary.json)")
                raise typer.Exit(2)
            result = evaluate_gate(read_summary(run_dir), options)
    except GateError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
    else:
        _show(result.table())
        outcome = "[green]gate passed[/green]" if result.passed else "[red]gate FAILED[/red]"
        console.print(
            f"{outcome}: {sum(c.passed for c in result.checks)} of {len(result.checks)} requirements hold"
        )
    if not result.passed:
        raise typer.Exit(1)


def _remote_gate(server: str, api_key: str | None, job_id: str, options: object) -> dict[str, object]:
    import httpx

    from eval.gate import GateError, GateOptions
    from eval.platform import api_root

    assert isinstance(options, GateOptions)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.post(
            f"{api_root(server)}/v1/evaluations/{job_id}/gate",
            json=options.model_dump(),
            headers=headers,
            timeout=60,
        )
    except httpx.HTTPError as exc:
        raise GateError(f"gate request failed: {type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:300]
        raise GateError(f"HTTP {response.status_code}: {message}")
    body: dict[str, object] = response.json()
    return body


@eval_app.command("judge-check")
def judge_check(
    judge_url: Annotated[str | None, typer.Option(help="Judge endpoint (default: the gateway).")] = None,
    judge_model: Annotated[str | None, typer.Option(help="Judge model (default: the base model).")] = None,
    server: Annotated[
        str | None, typer.Option(help="ragswap gateway URL (default: server.host:server.port).")
    ] = None,
    api_key: Annotated[str | None, typer.Option(envvar="RAGSWAP_API_KEY", help="Gateway API key.")] = None,
    metric: Annotated[
        list[str] | None, typer.Option(help="Judged metrics to check (repeat); default: all four.")
    ] = None,
    calibration: Annotated[
        Path | None,
        typer.Option(help="A labelled set of your own (default: eval.judge_check_set or built-in)."),
    ] = None,
    refresh: Annotated[bool, typer.Option(help="Ask the judge again even if a result is cached.")] = False,
    strict: Annotated[bool, typer.Option(help="Exit 1 when a metric's judge is unreliable.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Check the judge alone on the labelled calibration set: agreement per judged metric with 95 % CIs."""
    from eval.calibration import CALIBRATION_SET, load_calibration_set
    from eval.embeddings import default_embedding_path
    from eval.jobs import judge_config
    from eval.scoring import build_scorer, needs_embeddings
    from eval.settings import JUDGED_METRICS
    from ragswap import load_settings

    metrics = metric or list(JUDGED_METRICS)
    unknown = sorted(set(metrics) - set(JUDGED_METRICS))
    if unknown:
        console.print(f"[red]error:[/red] not judged metrics: {unknown}; judged: {list(JUDGED_METRICS)}")
        raise typer.Exit(2)
    settings = load_settings()
    path = calibration or settings.eval.judge_check_set or CALIBRATION_SET
    try:
        load_calibration_set(path)
    except (OSError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    judge = judge_config(
        settings, server_url=server, api_key=api_key, judge_url=judge_url, judge_model=judge_model
    )
    judge.calibration_set = path
    embedding_path = default_embedding_path(settings.models) if needs_embeddings(metrics) else None
    scorer = build_scorer(
        metrics, judge, embedding_path, strictness=settings.eval.answer_relevancy_strictness
    )

    async def check() -> object:
        try:
            return await scorer.run_judge_check(refresh=refresh)
        finally:
            scorer.close()

    with console.status(f"asking {judge.model} at {judge.url} about the calibration items ..."):
        result = asyncio.run(check())
    from eval.records import JudgeCheck

    assert isinstance(result, JudgeCheck)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
    else:
        _show(_judge_table(result))
    if strict and result.unreliable():
        raise typer.Exit(1)


@eval_app.command("report")
def report(run_dir: Annotated[Path, typer.Argument(help="Run directory.")]) -> None:
    """(Re)build ``report.html`` of a run directory from its traces."""
    from eval.report import write_report

    if not (run_dir / "summary.json").is_file():
        console.print(f"[red]error:[/red] {run_dir} is not a run directory (no summary.json)")
        raise typer.Exit(2)
    console.print(f"wrote {write_report(run_dir)}")
