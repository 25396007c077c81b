"""`ragswap` subcommands of the retrieval package: ``ingest``, ``search`` and ``collections`` (incl. ``tune``).

They open the store in this process: the embedded store only while no gateway holds it (they say so and exit
otherwise), a Qdrant server (``retrieval.url``) at any time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from retrieval.settings import EmbeddingPrecision

if TYPE_CHECKING:
    from retrieval.service import RetrievalService

console = Console()
collections_app = typer.Typer(help="Retrieval collections.", no_args_is_help=True)


def _service() -> RetrievalService:
    """The service over the configured store; exits with the store's message when another process holds it."""
    from ragswap import load_settings
    from retrieval.errors import StoreBusyError
    from retrieval.service import RetrievalService

    settings = load_settings()
    try:
        return RetrievalService(settings.retrieval, settings.models, settings.server.state_dir)
    except StoreBusyError as exc:
        raise _fail(exc) from exc


def _fail(exc: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {getattr(exc, 'message', exc)}")
    return typer.Exit(1)


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or directories (txt, md, html, pdf, jsonl).")],
    collection: Annotated[
        str, typer.Option("--collection", "-c", help="Created with the defaults if missing.")
    ],
) -> None:
    """Add or replace documents; unchanged chunks are skipped, a failure changes nothing."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from retrieval.errors import RetrievalError
    from retrieval.loaders import iter_paths, load_path

    service = _service()
    try:
        service.ensure_collection(collection)
        docs = [doc for path in iter_paths(paths) for doc in load_path(path)]
        columns = (TextColumn("encoding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("encoding", total=None)
            report = service.ingest(
                collection, docs, progress=lambda done, total: bar.update(task, completed=done, total=total)
            )
    except RetrievalError as exc:
        raise _fail(exc) from exc
    finally:
        service.close()
    console.print(
        f"{collection}: {report.documents} documents, {report.chunks_added} chunks added, "
        f"{report.chunks_unchanged} unchanged, {report.chunks_removed} removed in {report.seconds:.1f}s"
    )


def search(
    query: Annotated[str, typer.Argument()],
    collection: Annotated[str, typer.Option("--collection", "-c")],
    top_k: Annotated[int | None, typer.Option("--top-k", "-k")] = None,
    mode: Annotated[str | None, typer.Option(help="dense, bm25 or hybrid.")] = None,
    fusion: Annotated[str | None, typer.Option(help="dbsf, rrf or weighted.")] = None,
    group_by: Annotated[str | None, typer.Option(help="document (one hit per document) or section.")] = None,
    rerank: Annotated[bool | None, typer.Option("--rerank/--no-rerank")] = None,
    rerank_weight: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Cross-encoder share of the final score (default: the reranker's recommended one).",
        ),
    ] = None,
    filter_json: Annotated[
        str | None, typer.Option("--filter", help='JSON, e.g. {"source": "a.md"}.')
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Search a collection and show every stage's score."""
    from retrieval.errors import RetrievalError
    from retrieval.filters import parse_filter
    from retrieval.search import SearchQuery

    service = _service()
    try:
        q = SearchQuery.from_settings(
            service.settings.search,
            collection,
            query,
            mode=mode,  # type: ignore[arg-type]
            fusion=fusion,  # type: ignore[arg-type]
            group_by=group_by,  # type: ignore[arg-type]
            top_k=top_k,
            rerank=rerank,
            rerank_weight=rerank_weight,
            filter=parse_filter(json.loads(filter_json) if filter_json else None),
        )
        hits = service.search(q)
    except (RetrievalError, json.JSONDecodeError) as exc:
        raise _fail(exc) from exc
    finally:
        service.close()
    if as_json:
        rows = [
            {
                "chunk_id": h.chunk.id,
                "document_id": h.chunk.document_id,
                "start": h.chunk.start,
                "end": h.chunk.end,
                "score": h.score,
                "scores": h.scores,
                "text": h.chunk.text,
            }
            for h in hits
        ]
        console.print_json(json.dumps(rows))
        return
    table = Table("#", "document", "score", "stages", "text")
    for n, h in enumerate(hits, start=1):
        stages = " ".join(f"{k}={v:.3f}" for k, v in h.scores.items())
        table.add_row(str(n), h.chunk.document_id, f"{h.score:.4f}", stages, h.chunk.text[:120])
    console.print(table)


@collections_app.command("list")
def collections_list() -> None:
    """Collections with their document and chunk counts."""
    service = _service()
    try:
        infos = service.list_collections()
    finally:
        service.close()
    table = Table("name", "embedding model", "precision", "chunker", "documents", "chunks")
    for info in infos:
        table.add_row(
            info.spec.name,
            info.spec.embedding_model,
            info.spec.embedding_precision,
            info.spec.chunking.chunker,
            str(info.documents),
            str(info.chunks),
        )
    console.print(table)


@collections_app.command("create")
def collections_create(
    name: str,
    embedding_model: Annotated[str | None, typer.Option()] = None,
    precision: Annotated[
        EmbeddingPrecision | None, typer.Option(help="Embedder precision: float32, or int8 (faster on CPU).")
    ] = None,
    chunker: Annotated[str | None, typer.Option(help="fixed, recursive or semantic.")] = None,
    chunk_size: Annotated[int | None, typer.Option()] = None,
    chunk_overlap: Annotated[int | None, typer.Option()] = None,
    section_tokens: Annotated[
        int | None,
        typer.Option(help="Longest document scored whole (tokens); longer ones are cut in sections."),
    ] = None,
    k1: Annotated[float | None, typer.Option(help="BM25 k1.")] = None,
    b: Annotated[float | None, typer.Option(help="BM25 b.")] = None,
    index: Annotated[
        list[str] | None,
        typer.Option(help="Payload index on a metadata key, KEY:keyword|integer|float|bool (repeatable)."),
    ] = None,
) -> None:
    """Create an empty collection."""
    from pydantic import ValidationError

    from retrieval.errors import RetrievalError
    from retrieval.settings import Bm25Settings, ChunkingSettings

    service = _service()
    try:
        chunking = ChunkingSettings.model_validate(
            {
                **service.settings.chunking.model_dump(),
                **{
                    k: v
                    for k, v in {
                        "chunker": chunker,
                        "chunk_size": chunk_size,
                        "chunk_overlap": chunk_overlap,
                        "section_tokens": section_tokens,
                    }.items()
                    if v is not None
                },
            }
        )
        bm25 = Bm25Settings.model_validate(
            {
                **service.settings.bm25.model_dump(),
                **{k: v for k, v in {"k1": k1, "b": b}.items() if v is not None},
            }
        )
        indexes = {}
        for item in index or []:
            key, _, kind = item.partition(":")
            if kind not in ("keyword", "integer", "float", "bool") or not key:
                raise RetrievalError(f"--index {item!r}: expected KEY:keyword|integer|float|bool")
            indexes[key] = kind
        spec = service.create_collection(
            name,
            embedding_model=embedding_model,
            chunking=chunking,
            bm25=bm25,
            embedding_precision=precision,
            payload_indexes=indexes,  # type: ignore[arg-type]
        )
    except (RetrievalError, ValidationError) as exc:
        raise _fail(exc) from exc
    finally:
        service.close()
    console.print(
        f"created {spec.name} ({spec.embedding_model} {spec.embedding_precision}, {spec.chunking.chunker} chunks)"
    )


@collections_app.command("describe")
def collections_describe(name: str) -> None:
    """A collection's configuration and counts as JSON."""
    from retrieval.errors import RetrievalError

    service = _service()
    try:
        info = service.describe(name)
    except RetrievalError as exc:
        raise _fail(exc) from exc
    finally:
        service.close()
    console.print_json(
        json.dumps({**info.spec.model_dump(mode="json"), "documents": info.documents, "chunks": info.chunks})
    )


@collections_app.command("delete")
def collections_delete(name: str) -> None:
    """Delete a collection and its index."""
    from retrieval.errors import RetrievalError

    service = _service()
    try:
        service.delete_collection(name)
    except RetrievalError as exc:
        raise _fail(exc) from exc
    finally:
        service.close()
    console.print(f"deleted {name}")


@collections_app.command("tune")
def collections_tune(
    name: Annotated[str, typer.Argument(help="The collection.")],
    queries: Annotated[Path, typer.Option(help="Judged queries: BEIR queries.jsonl ({_id, text} per line).")],
    qrels: Annotated[Path, typer.Option(help="Judgements: BEIR qrels TSV (query-id, corpus-id, score).")],
    held_out: Annotated[float, typer.Option(help="Share of the queries held apart for the report.")] = 0.3,
    seed: Annotated[int, typer.Option(help="Which queries are held apart.")] = 0,
    bm25: Annotated[bool, typer.Option("--bm25/--no-bm25", help="Tune BM25 k1/b.")] = True,
    rerank: Annotated[
        bool, typer.Option("--rerank/--no-rerank", help="Tune the reranker's depth/weight.")
    ] = True,
    dry_run: Annotated[bool, typer.Option(help="Report what would be chosen; store nothing.")] = False,
    store_if_worse: Annotated[
        bool, typer.Option(help="Store the choice even if it ranks the held-apart queries worse.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Learn the collection's search settings from judged queries; report before/after on held-apart ones.
    A choice that ranks the held-apart queries worse than the previous settings is not stored."""
    from pydantic import ValidationError
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from retrieval.beir import read_qrels, read_queries
    from retrieval.errors import RetrievalError
    from retrieval.tune import METRICS, TuneOptions, tune_collection

    try:
        options = TuneOptions(
            held_out=held_out,
            seed=seed,
            bm25=bm25,
            rerank=rerank,
            dry_run=dry_run,
            store_if_worse=store_if_worse,
        )
        judged_queries, judgements = read_queries(queries), read_qrels(qrels)
    except (RetrievalError, ValidationError) as exc:
        raise _fail(exc) from exc
    service = _service()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=not as_json) as bar:
            tasks: dict[str, object] = {}

            def progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(stage, total=total or None)
                bar.update(tasks[stage], completed=done, total=total or None)  # type: ignore[arg-type]

            report = tune_collection(service, name, judged_queries, judgements, options, progress)
    except RetrievalError as exc:
        raise _fail(exc) from exc
    finally:
        service.close()
    if as_json:
        console.print_json(report.model_dump_json())
        return
    table = Table("metric", "before", "after", title=f"{name}: {report.held_out_queries} held-apart queries")
    for metric in METRICS:
        b, a = report.before[metric], report.after[metric]
        table.add_row(
            metric, f"{b.mean:.4f} [{b.low:.3f}, {b.high:.3f}]", f"{a.mean:.4f} [{a.low:.3f}, {a.high:.3f}]"
        )
    console.print(table)
    console.print(f"chosen on {report.tuning_queries} tuning queries: {json.dumps(report.chosen)}")
    for note in report.notes:
        console.print(f"note: {note}")
    if report.stored:
        console.print("stored with the collection")
    elif dry_run:
        console.print("dry run: nothing stored")
    else:
        console.print("not stored: the previous settings are kept (--store-if-worse stores the choice)")


cli_app = typer.Typer()
"""``ragswap ingest``, ``ragswap search`` and ``ragswap collections ...``; ``ragswap.cli`` adds them to the root."""
cli_app.command("ingest")(ingest)
cli_app.command("search")(search)
cli_app.add_typer(collections_app, name="collections")
