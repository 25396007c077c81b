"""``ragswap train ...`` and ``ragswap adapters merge|export``.

``ragswap train CONFIG.yaml`` runs an SFT/DPO recipe (``sft`` is the default subcommand); ``ragswap train reranker``
and ``ragswap train embedder`` fine-tune the retrieval models on BEIR judgements. ``merge`` and ``export`` are this
package's part of the ``ragswap adapters`` group, which ``ragswap.cli`` composes.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from typer.core import TyperGroup

from training.retrievers.common import RetrieverConfig, RetrieverTrainResult
from training.retrievers.embedder import EmbedderConfig
from training.retrievers.reranker import RerankerConfig

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


CONFIGS: dict[str, type[RetrieverConfig]] = {"reranker": RerankerConfig, "embedder": EmbedderConfig}


def _query_ids(path: Path | None) -> list[str] | None:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()] if path else None


def _retriever_parameters(kind: str, config: type[RetrieverConfig]) -> list[inspect.Parameter]:
    """The options both ``ragswap train reranker`` and ``ragswap train embedder`` take (the shared part of the
    trainers' :class:`RetrieverConfig`), as typer parameters. An option left unset (``None``) falls back to the
    trainer's default (``config``'s, shown in the help)."""

    def option(name: str, annotation: Any, default: Any = None) -> inspect.Parameter:
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)

    def default_help(name: str) -> str:
        return f"Default: {config.model_fields[name].default}."

    return [
        option(
            "data_dir",
            Annotated[
                Path, typer.Argument(help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.")
            ],
            inspect.Parameter.empty,
        ),
        option(
            "output_dir",
            Annotated[Path, typer.Option("--output-dir", "-o", help="Where the trained model goes.")],
            Path("outputs") / kind,
        ),
        option(
            "train_queries",
            Annotated[Path | None, typer.Option(help="File of training query ids, one a line.")],
        ),
        option(
            "eval_queries",
            Annotated[Path | None, typer.Option(help="File of held-apart query ids, one a line.")],
        ),
        option("split", Annotated[str | None, typer.Option(help="qrels split (default: train).")]),
        option(
            "base_model", Annotated[str | None, typer.Option(help="Start from this model (default: MiniLM).")]
        ),
        option("epochs", Annotated[float | None, typer.Option(help=default_help("epochs"))]),
        option(
            "max_steps", Annotated[int | None, typer.Option(help="Stop after this many steps (-1: epochs).")]
        ),
        option("batch_size", Annotated[int | None, typer.Option(help=default_help("batch_size"))]),
        option("learning_rate", Annotated[float | None, typer.Option(help=default_help("learning_rate"))]),
        option(
            "max_corpus_docs", Annotated[int | None, typer.Option(help="Shrink the corpus for a quick run.")]
        ),
        option("seed", Annotated[int | None, typer.Option(help="Data order, splits and initialisation.")]),
    ]


def _retriever_command(
    kind: Literal["reranker", "embedder"],
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register ``ragswap train <kind>``: the decorated function declares only the options of that trainer (its
    docstring is the command's help); the shared ones come from :func:`_retriever_parameters`, and both run
    :func:`_train_retriever`."""

    def register(declared: Callable[..., None]) -> Callable[..., None]:
        def command(**options: Any) -> None:
            _train_retriever(kind, options)

        own = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            for p in inspect.signature(declared, eval_str=True).parameters.values()
        ]
        command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [*_retriever_parameters(kind, CONFIGS[kind]), *own]
        )
        command.__doc__ = declared.__doc__
        train_app.command(kind)(command)
        return declared

    return register


def _train_retriever(kind: Literal["reranker", "embedder"], options: dict[str, Any]) -> None:
    """Run ``train_<kind>`` with the options the user set (the rest are its config's defaults) and the configured
    model store; print nDCG@10 on the held-apart queries before and after.

    Besides the data folder, the output folder and the two query-id files, each option is the field of the same
    name of the trainer's config, so both commands share this one plumbing.
    """
    from ragswap import load_settings
    from training.config import RecipeError
    from training.retrievers.embedder import train_embedder
    from training.retrievers.reranker import train_reranker

    options = dict(options)
    data_dir, output_dir = options.pop("data_dir"), options.pop("output_dir")
    given = {name: value for name, value in options.items() if value is not None}
    given["train_query_ids"] = _query_ids(given.pop("train_queries", None))
    given["eval_query_ids"] = _query_ids(given.pop("eval_queries", None))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    trainers: dict[str, Callable[..., RetrieverTrainResult]] = {
        "reranker": train_reranker,
        "embedder": train_embedder,
    }
    try:
        config = CONFIGS[kind].parse(given)
        result = trainers[kind](data_dir, output_dir, models=load_settings().models, config=config)
    except RecipeError as exc:
        raise _fail(exc) from exc
    console.print(
        f"{kind} {result.output_dir}: nDCG@10 {result.ndcg10_before:.4f} → {result.ndcg10_after:.4f} "
        f"on {result.eval_queries} held-apart queries ({result.steps} steps, {result.seconds:.0f}s)"
    )


@_retriever_command("reranker")
def train_reranker_cmd(
    negatives: Annotated[int | None, typer.Option(help="BM25 hard negatives per query.")] = None,
    loss: Annotated[str | None, typer.Option(help="listwise (default) or bce.")] = None,
    mini_batch_size: Annotated[
        int | None,
        typer.Option(min=1, help="Pairs the listwise loss runs at once (bounds memory; same gradients)."),
    ] = None,
    rerank_depth: Annotated[
        int | None, typer.Option(help="BM25 candidates reranked in the evaluation.")
    ] = None,
) -> None:
    """Fine-tune a cross-encoder reranker (from MiniLM, or --base-model, e.g. an embedder trained on the same
    data) with BM25 hard negatives; prints nDCG@10 before/after."""


@_retriever_command("embedder")
def train_embedder_cmd(
    negative_skip: Annotated[
        int | None,
        typer.Option(help="BM25 hits left out before the hard negatives (often unjudged positives)."),
    ] = None,
) -> None:
    """Adapt the bi-encoder embedder (in-batch + BM25 hard negatives); prints dense nDCG@10 before/after."""


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
