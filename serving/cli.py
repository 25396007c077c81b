"""`ragswap serve` and `ragswap adapters ...` (the latter talk to a running gateway over its HTTP API)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()
adapters_app = typer.Typer(help="Adapters of a running gateway.", no_args_is_help=True)

UrlOpt = Annotated[
    str | None, typer.Option("--url", envvar="RAGSWAP_URL", help="Gateway URL (default: server.host:port).")
]
KeyOpt = Annotated[
    str | None,
    typer.Option(
        "--key", envvar="RAGSWAP_API_KEY", help="Bearer key (default: the first configured admin key)."
    ),
]


def _client(url: str | None, key: str | None) -> Any:
    import httpx

    from ragswap.config import load_settings

    settings = load_settings()
    base = url or f"http://{settings.server.host}:{settings.server.port}"
    if key is None:
        keys = settings.server.admin_keys or settings.server.api_keys
        key = keys[0].get_secret_value() if keys else None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=base, headers=headers, timeout=300)


def _check(resp: Any) -> Any:
    if resp.status_code >= 400:
        try:
            err = resp.json()["error"]
            console.print(f"[red]error {resp.status_code}[/red] ({err.get('code')}): {err.get('message')}")
        except (ValueError, KeyError):
            console.print(f"[red]error {resp.status_code}[/red]: {resp.text}")
        raise typer.Exit(1)
    return resp.json() if resp.content else None


@adapters_app.command("list")
def adapters_list(url: UrlOpt = None, key: KeyOpt = None) -> None:
    """Registered adapter versions, their aliases and per-replica state."""
    with _client(url, key) as http:
        data = _check(http.get("/v1/adapters"))["data"]
    table = Table("model", "id", "rank", "targets", "aliases", "collection", "replicas")
    for a in data:
        states = " ".join(f"{r['replica']}:{r['state']}" for r in a["replicas"])
        model = a["model"] + (" (latest)" if a["latest"] else "")
        table.add_row(
            model,
            str(a["id"]),
            str(a["rank"]),
            ",".join(a["target_modules"]),
            ",".join(a["aliases"]),
            a.get("default_collection") or "",
            states,
        )
    console.print(table)


@adapters_app.command("push")
def adapters_push(
    name: Annotated[str, typer.Argument(help="Adapter name.")],
    path: Annotated[Path, typer.Argument(help="Adapter directory under one of server.adapter_roots.")],
    version: Annotated[int | None, typer.Option(help="Version (default: latest + 1).")] = None,
    alias: Annotated[list[str] | None, typer.Option(help="Alias to point at it (repeatable).")] = None,
    collection: Annotated[str | None, typer.Option(help="Default retrieval collection.")] = None,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """Validate and hot-load an adapter on every replica."""
    body: dict[str, Any] = {"name": name, "path": str(path.expanduser().absolute()), "aliases": alias or []}
    if version is not None:
        body["version"] = version
    if collection:
        body["default_collection"] = collection
    with _client(url, key) as http:
        data = _check(http.post("/v1/adapters", json=body))
    console.print(f"loaded [bold]{data['model']}[/bold] (id {data['id']}, rank {data['rank']})")


@adapters_app.command("rm")
def adapters_rm(
    ref: Annotated[str, typer.Argument(help="`name` (all versions) or `name@version`.")],
    force: Annotated[bool, typer.Option(help="Also remove aliases pointing at it.")] = False,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """Unload an adapter (version) from every replica and forget it."""
    with _client(url, key) as http:
        data = _check(http.delete(f"/v1/adapters/{ref}", params={"force": force}))
    console.print(f"removed {', '.join(data['deleted'])}")


@adapters_app.command("alias")
def adapters_alias(
    alias: Annotated[str, typer.Argument(help="Alias name.")],
    target: Annotated[
        str | None, typer.Argument(help="`name@version` or `name`; omit with --delete.")
    ] = None,
    collection: Annotated[str | None, typer.Option(help="Default retrieval collection of the alias.")] = None,
    delete: Annotated[bool, typer.Option("--delete", help="Remove the alias.")] = False,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """Point an alias at an adapter version (atomic switch), or remove it."""
    with _client(url, key) as http:
        if delete:
            _check(http.delete(f"/v1/aliases/{alias}"))
            console.print(f"alias {alias} removed")
            return
        if not target:
            raise typer.BadParameter("give a target, or --delete")
        body = {"target": target, "default_collection": collection}
        data = _check(http.put(f"/v1/aliases/{alias}", json=body))
    console.print(f"{alias} → {data['target']}")


def register(app: typer.Typer) -> None:
    """Add this package's commands to the root `ragswap` command."""

    @app.command("serve")
    def serve_cmd(
        host: Annotated[str | None, typer.Option(help="Bind address (default server.host).")] = None,
        port: Annotated[int | None, typer.Option(help="Port (default server.port).")] = None,
        engine_url: Annotated[
            list[str] | None,
            typer.Option(help="Use running vLLM replicas instead of starting them (repeatable)."),
        ] = None,
        replicas: Annotated[
            int | None, typer.Option(help="Embedded replicas to start (engine.replicas).")
        ] = None,
    ) -> None:
        """Start the gateway (and the vLLM engine replicas unless engine.urls is set) in one command."""
        from ragswap.config import load_settings
        from serving.server import InsecureBindError, StartupFailedError, serve

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        settings = load_settings()
        server = settings.server.model_copy(
            update={k: v for k, v in {"host": host, "port": port}.items() if v is not None}
        )
        engine_update: dict[str, Any] = {}
        if engine_url:
            engine_update["urls"] = [u.rstrip("/") for u in engine_url]
        if replicas:
            engine_update["replicas"] = replicas
        settings = settings.model_copy(
            update={"server": server, "engine": settings.engine.model_copy(update=engine_update)}
        )
        try:
            serve(settings)
        except (InsecureBindError, StartupFailedError) as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from exc

    app.add_typer(adapters_app, name="adapters")
