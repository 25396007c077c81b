"""``ragswap train ...`` and ``ragswap adapters merge|export``.

``ragswap train CONFIG.yaml`` runs an SFT/DPO recipe (``sft`` is the default subcommand); ``ragswap train reranker``
and ``ragswap train embedder`` fine-tune the retrieval models on BEIR judgements. ``merge`` and ``export`` are this
package's part of the ``ragswap adapters`` group, which ``ragswap.cli`` composes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from typer.core import TyperGroup

console = Console()


class _DefaultToSft(TyperGroup):
    """``ragswap train CONFIG.yaml`` means ``ragswap train sft CONFIG.yaml``."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args.insert(0, "sft")
        return super().resolve_command(ctx, args)


train_app = typer.Typer(
    cls=_DefaultToSft,
    help="Train adapters (SFT/DPO recipes) and retrieval models. `ragswap train CONFIG.yaml` runs a recipe.",
    no_args_is_help=True,
)


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(2)


@train_app.command("sft")
def train_sft(
    config: Annotated[Path, typer.Argument(help="YAML recipe (see docs/training.md).")],
    output_dir: Annotated[Path | None, typer.Option(help="Override the recipe's output_dir.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Override the recipe's max_steps.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint of output_dir.")] = False,
    register: Annotated[
        str | None, typer.Option(help="Gateway URL: register and hot-load the adapter there when done.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Adapter name (default: output folder name).")] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="RAGSWAP_API_KEY", help="Gateway admin key (default: first configured admin key)."
        ),
    ] = None,
    adapter_root: Annotated[
        Path | None, typer.Option(help="Copy the adapter under this gateway adapter root before registering.")
    ] = None,
    promote: Annotated[
        str | None,
        typer.Option(
            help="Alias to promote the new version onto through the evaluation gate (needs --register, "
            "--dataset, --require)."
        ),
    ] = None,
    dataset: Annotated[
        Path | None, typer.Option(help="Promotion: evaluation rows (JSONL).", exists=True, dir_okay=False)
    ] = None,
    require: Annotated[
        list[str] | None, typer.Option(help="Promotion: gate requirement, e.g. 'rouge_l>base' (repeatable).")
    ] = None,
    collection: Annotated[str | None, typer.Option(help="Promotion: collection to ground answers.")] = None,
    steps: Annotated[
        str, typer.Option(help="Promotion: candidate weights per step, e.g. 10,50,100.")
    ] = "100",
    step_interval: Annotated[
        float, typer.Option(help="Promotion: seconds of watched soak between steps.")
    ] = 0.0,
    progress: Annotated[bool, typer.Option(help="Show the progress bar.")] = True,
) -> None:
    """Train a LoRA/DoRA/QLoRA adapter from a recipe (SFT, or DPO for `dpo` datasets); optionally register it on
    a gateway and promote it onto an alias only if it passes the evaluation gate (exit 1 when it does not)."""
    from ragswap import load_settings
    from training.config import RecipeError, load_config
    from training.register import RegisterError, register_adapter
    from training.trainer import HardwareError, train

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if promote and not (register and dataset and require):
        raise typer.BadParameter(
            "--promote needs --register, --dataset and --require", param_hint="--promote"
        )
    settings = load_settings()
    try:
        recipe = load_config(config, output_dir=output_dir, max_steps=max_steps, name=name)
        result = train(recipe, models=settings.models, resume=resume, progress=progress)
    except (RecipeError, HardwareError) as exc:
        raise _fail(exc) from exc
    metrics = result.manifest.metrics
    console.print(
        f"adapter [bold]{result.output_dir}[/bold]: {result.global_step} steps in {result.seconds:.0f}s, "
        f"train loss {result.train_loss:.4f}"
        + (f", eval loss {result.eval_loss:.4f}" if result.eval_loss is not None else "")
        + f", {metrics.get('tokens_per_second', 0):.0f} tok/s"
    )
    if register:
        if api_key is None:
            keys = settings.server.admin_keys
            api_key = keys[0].get_secret_value() if keys else None
        try:
            data = register_adapter(
                result.output_dir,
                register,
                name or result.manifest.name,
                api_key=api_key,
                adapter_root=adapter_root,
            )
        except RegisterError as exc:
            raise _fail(exc) from exc
        console.print(f"registered as [bold]{data.get('model')}[/bold] on {register}")
        if promote:
            from serving import promotion_body, run_promotion

            assert dataset is not None and require is not None  # checked above
            body = promotion_body(
                str(data["model"]),
                dataset,
                require,
                collection=collection,
                steps=steps,
                step_interval_s=step_interval,
                reason=f"ragswap train {config.name}",
            )
            promotion = run_promotion(promote, body, url=register, key=api_key)
            if promotion["status"] != "promoted":
                raise typer.Exit(1)


def _retriever_options(
    data_dir: Path, train_queries: Path | None, eval_queries: Path | None
) -> dict[str, Any]:
    def ids(path: Path | None) -> list[str] | None:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()] if path else None

    return {"data_dir": data_dir, "train_query_ids": ids(train_queries), "eval_query_ids": ids(eval_queries)}


DataDir = Annotated[Path, typer.Argument(help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.")]
OutDir = Annotated[Path, typer.Option("--output-dir", "-o", help="Where the trained model goes.")]
TrainIds = Annotated[Path | None, typer.Option(help="File of training query ids, one a line.")]
EvalIds = Annotated[Path | None, typer.Option(help="File of held-apart query ids, one a line.")]
Epochs = Annotated[float | None, typer.Option(help="Default: the trainer's (measured) default.")]
BatchSize = Annotated[int | None, typer.Option(help="Default: the trainer's default.")]
LearningRate = Annotated[float | None, typer.Option(help="Default: the trainer's default.")]


def _given(**options: Any) -> dict[str, Any]:
    """The options the user set; the rest fall back to the training function's defaults (one source of them)."""
    return {name: value for name, value in options.items() if value is not None}


def _train_retriever(kind: Literal["reranker", "embedder"], command: dict[str, Any]) -> None:
    """Run ``train_<kind>`` with the options the user set (the rest are the trainer's defaults) and the configured
    model store; print nDCG@10 on the held-apart queries before and after.

    ``command`` is the command's parameters (its ``locals()``): besides the data folder and the two query-id files,
    each is the trainer's keyword argument of the same name, so both commands share this one plumbing.
    """
    options = dict(command)
    data = _retriever_options(
        options.pop("data_dir"), options.pop("train_queries"), options.pop("eval_queries")
    )
    from ragswap import load_settings
    from training.config import RecipeError
    from training.retrievers import embedder, reranker
    from training.retrievers.common import RetrieverTrainResult

    trainers: dict[str, Callable[..., RetrieverTrainResult]] = {
        "reranker": reranker.train_reranker,
        "embedder": embedder.train_embedder,
    }
    train = trainers[kind]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        result = train(**data, models=load_settings().models, **_given(**options))
    except RecipeError as exc:
        raise _fail(exc) from exc
    console.print(
        f"{kind} {result.output_dir}: nDCG@10 {result.ndcg10_before:.4f} → {result.ndcg10_after:.4f} "
        f"on {result.eval_queries} held-apart queries ({result.steps} steps, {result.seconds:.0f}s)"
    )


@train_app.command("reranker")
def train_reranker_cmd(
    data_dir: DataDir,
    output_dir: OutDir = Path("outputs/reranker"),
    train_queries: TrainIds = None,
    eval_queries: EvalIds = None,
    split: Annotated[str, typer.Option(help="qrels split.")] = "train",
    epochs: Epochs = None,
    max_steps: Annotated[int, typer.Option()] = -1,
    batch_size: BatchSize = None,
    learning_rate: LearningRate = None,
    negatives: Annotated[int | None, typer.Option(help="BM25 hard negatives per query.")] = None,
    max_corpus_docs: Annotated[int | None, typer.Option(help="Shrink the corpus for a quick run.")] = None,
    base_model: Annotated[
        str | None, typer.Option(help="Start from this model, e.g. an embedder trained on the same data.")
    ] = None,
    loss: Annotated[str | None, typer.Option(help="listwise (default) or bce.")] = None,
    mini_batch_size: Annotated[
        int | None,
        typer.Option(min=1, help="Pairs the listwise loss runs at once (bounds memory; same gradients)."),
    ] = None,
) -> None:
    """Fine-tune a cross-encoder reranker (from MiniLM) with BM25 hard negatives; prints nDCG@10 before/after."""
    _train_retriever("reranker", locals())


@train_app.command("embedder")
def train_embedder_cmd(
    data_dir: DataDir,
    output_dir: OutDir = Path("outputs/embedder"),
    train_queries: TrainIds = None,
    eval_queries: EvalIds = None,
    split: Annotated[str, typer.Option(help="qrels split.")] = "train",
    epochs: Epochs = None,
    max_steps: Annotated[int, typer.Option()] = -1,
    batch_size: BatchSize = None,
    learning_rate: LearningRate = None,
    max_corpus_docs: Annotated[int | None, typer.Option(help="Shrink the corpus for a quick run.")] = None,
) -> None:
    """Adapt the bi-encoder embedder (in-batch + BM25 hard negatives); prints dense nDCG@10 before/after."""
    _train_retriever("embedder", locals())


def adapters_merge(
    adapters: Annotated[list[Path], typer.Argument(help="Two or more adapter directories.")],
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="New adapter directory.")],
    method: Annotated[str, typer.Option(help="linear | ties | dare_linear | dare_ties.")] = "linear",
    weights: Annotated[
        str | None, typer.Option(help="Comma-separated weights, one per adapter (default: equal).")
    ] = None,
    density: Annotated[float, typer.Option(help="Share of weights kept by ties/dare.")] = 0.5,
    base_model: Annotated[str | None, typer.Option(help="Override the base model.")] = None,
) -> None:
    """Combine adapters into a new adapter (peft add_weighted_adapter) with its manifest."""
    from ragswap import load_settings
    from training.merge import MergeError, merge_adapters

    if method not in ("linear", "ties", "dare_linear", "dare_ties"):
        raise typer.BadParameter(f"unknown method {method!r}", param_hint="--method")
    try:
        parsed = [float(w) for w in weights.split(",")] if weights else None
    except ValueError as exc:
        raise typer.BadParameter(f"weights must be numbers: {weights}", param_hint="--weights") from exc
    try:
        merge_adapters(
            adapters,
            output_dir,
            models=load_settings().models,
            method=method,  # type: ignore[arg-type]
            weights=parsed,
            density=density,
            base_model=base_model,
        )
    except MergeError as exc:
        raise _fail(exc) from exc
    console.print(f"merged adapter written to [bold]{output_dir}[/bold]")


def adapters_export(
    adapter: Annotated[Path, typer.Argument(help="Adapter directory.")],
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o", help="Full model directory to write.")],
    merge_into_base: Annotated[
        bool, typer.Option("--merge-into-base", help="Fold the adapter into the base weights (required).")
    ] = False,
    base_model: Annotated[str | None, typer.Option(help="Override the base model.")] = None,
    dtype: Annotated[str, typer.Option(help="Weights dtype of the exported model.")] = "bfloat16",
) -> None:
    """Write the base model with the adapter merged in: a standalone model any server can load."""
    from ragswap import load_settings
    from training.merge import MergeError, export_merged

    if not merge_into_base:
        raise typer.BadParameter(
            "only --merge-into-base exports are supported", param_hint="--merge-into-base"
        )
    try:
        export_merged(adapter, output_dir, models=load_settings().models, base_model=base_model, dtype=dtype)
    except MergeError as exc:
        raise _fail(exc) from exc
    console.print(f"merged model written to [bold]{output_dir}[/bold]")


cli_app = typer.Typer()
"""``ragswap train ...``; ``ragswap.cli`` adds it to the root."""
cli_app.add_typer(train_app, name="train")
adapters_app = typer.Typer()
"""``ragswap adapters merge|export`` (local files, no gateway); ``ragswap.cli`` merges them into that group."""
adapters_app.command("merge")(adapters_merge)
adapters_app.command("export")(adapters_export)
