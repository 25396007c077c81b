"""`ragswap serve`, `ragswap worker` and `ragswap adapters ...` (the latter talk to a running gateway over its HTTP
API)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()
cli_app = typer.Typer()
"""``ragswap serve``, ``ragswap worker`` and ``ragswap controlplane ...``; ``ragswap.cli`` adds them to the root."""
adapters_app = typer.Typer()
"""This package's ``ragswap adapters ...`` commands; ``ragswap.cli`` merges them into that group."""
controlplane_app = typer.Typer(
    help="The control-plane database (server.database_url, default SQLite in server.state_dir).",
    no_args_is_help=True,
)

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

    from ragswap import load_settings

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


def alias_body(targets: list[str]) -> dict[str, Any]:
    """``acme@2`` → one target; ``acme@2=90 acme@3=10`` → weighted targets (the API checks they sum to 100)."""
    if len(targets) == 1 and "=" not in targets[0]:
        return {"target": targets[0]}
    split = []
    for item in targets:
        ref, sep, weight = item.rpartition("=")
        if not sep or not ref or not weight.isdigit():
            raise typer.BadParameter(f"`{item}`: weighted targets are written `name@version=WEIGHT`")
        split.append({"target": ref, "weight": int(weight)})
    return {"targets": split}


def _targets_text(targets: list[dict[str, Any]]) -> str:
    return ", ".join(f"{t['target']}={t['weight']}" for t in targets) or "—"


@adapters_app.command("alias")
def adapters_alias(
    alias: Annotated[str, typer.Argument(help="Alias name.")],
    targets: Annotated[
        list[str] | None,
        typer.Argument(
            help="`name@version` (or `name`), or weighted `acme@2=90 acme@3=10`; omit with --delete."
        ),
    ] = None,
    collection: Annotated[str | None, typer.Option(help="Default retrieval collection of the alias.")] = None,
    reason: Annotated[str | None, typer.Option(help="Why (kept in the alias's history).")] = None,
    delete: Annotated[bool, typer.Option("--delete", help="Remove the alias.")] = False,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """Point an alias at an adapter version or a weighted split (atomic switch), or remove it."""
    with _client(url, key) as http:
        if delete:
            _check(http.delete(f"/v1/aliases/{alias}"))
            console.print(f"alias {alias} removed")
            return
        if not targets:
            raise typer.BadParameter("give a target, or --delete")
        body = {**alias_body(targets), "default_collection": collection, "reason": reason}
        data = _check(http.put(f"/v1/aliases/{alias}", json=body))
    console.print(f"{alias} → {_targets_text(data['targets'])}")


@adapters_app.command("shadow")
def adapters_shadow(
    alias: Annotated[str, typer.Argument(help="Alias name.")],
    candidate: Annotated[
        str | None, typer.Argument(help="`name@version` to mirror requests to; omit with --off.")
    ] = None,
    percent: Annotated[
        int, typer.Option(help="Share of the alias's chat requests to mirror.", min=1, max=100)
    ] = 10,
    off: Annotated[bool, typer.Option("--off", help="Stop mirroring.")] = False,
    reason: Annotated[str | None, typer.Option(help="Why (kept in the alias's history).")] = None,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """Mirror a share of an alias's chat traffic to a candidate (its answers are captured, never returned), or
    stop. Score the capture with `ragswap eval run --dataset CAPTURE --score-only`."""
    with _client(url, key) as http:
        if off:
            data = _check(http.request("DELETE", f"/v1/aliases/{alias}/shadow", json={"reason": reason}))
            console.print(f"{alias}: shadow off")
            return
        if not candidate:
            raise typer.BadParameter("give a candidate, or --off")
        body = {"candidate": candidate, "percent": percent, "reason": reason}
        data = _check(http.put(f"/v1/aliases/{alias}/shadow", json=body))
    shadow = data["shadow"]
    console.print(
        f"{alias} → {_targets_text(data['targets'])}; shadow {shadow['candidate']} sees {shadow['percent']} % "
        "(captured under server.shadow_dir)"
    )


@adapters_app.command("history")
def adapters_history(
    alias: Annotated[str, typer.Argument(help="Alias name.")],
    limit: Annotated[int, typer.Option(help="Newest changes to show.", min=1, max=1000)] = 20,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """The alias's recorded changes, newest first: who, when, old → new targets, why."""
    with _client(url, key) as http:
        data = _check(http.get(f"/v1/aliases/{alias}/history", params={"limit": limit}))
    table = Table("id", "at", "kind", "by", "old", "new", "reason", title=f"history of {alias}")
    for change in data["data"]:
        table.add_row(
            str(change["id"]),
            change["at"],
            change["kind"],
            change["actor"] or "—",
            _targets_text(change["old"]),
            _targets_text(change["new"]),
            change["reason"] or "",
        )
    console.print(table)


@adapters_app.command("rollback")
def adapters_rollback(
    alias: Annotated[str, typer.Argument(help="Alias name.")],
    reason: Annotated[str | None, typer.Option(help="Why (kept in the alias's history).")] = None,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """Return the alias atomically to the targets it had before its latest change."""
    with _client(url, key) as http:
        data = _check(http.post(f"/v1/aliases/{alias}/rollback", json={"reason": reason}))
    console.print(f"{alias} → {_targets_text(data['targets'])}")


def _dataset_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file (or a JSON array) as the evaluation API takes them; it validates them."""
    import json

    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        rows = json.loads(text)
    else:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise typer.BadParameter(f"{path}: expected JSON objects, one per line (or a JSON array of them)")
    return rows


def promotion_body(
    candidate: str,
    dataset: Path,
    require: list[str],
    *,
    collection: str | None = None,
    steps: str = "100",
    step_interval_s: float = 0.0,
    soak: dict[str, Any] | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """The body of ``POST /v1/aliases/{alias}/promotions`` from command-line values (``steps`` as ``10,50,100``)."""
    try:
        weights = [int(s) for s in steps.split(",")]
    except ValueError as exc:
        raise typer.BadParameter("--steps takes comma-separated integers, e.g. 10,50,100") from exc
    body: dict[str, Any] = {
        "candidate": candidate,
        "dataset": _dataset_rows(dataset),
        "dataset_name": dataset.name,
        "collection": collection,
        "require": require,
        "steps": weights,
        "step_interval_s": step_interval_s,
        "reason": reason,
    }
    if soak is not None:
        body["soak"] = soak
    return body


def run_promotion(
    alias: str, body: dict[str, Any], *, url: str | None, key: str | None, wait: bool = True
) -> dict[str, Any]:
    """Start a promotion on the gateway; with ``wait``, poll until it is decided and print the decision (the gate's
    table and each soak's verdict). Returns the promotion as last seen. Exits 1 on an error answer."""
    import time

    with _client(url, key) as http:
        promotion: dict[str, Any] = _check(http.post(f"/v1/aliases/{alias}/promotions", json=body))
        console.print(f"promotion {promotion['id']}: evaluating (job {promotion['evaluation_id']})")
        if not wait:
            return promotion
        while promotion["status"] in ("evaluating", "promoting"):
            time.sleep(1.0)
            promotion = _check(http.get(f"/v1/aliases/{alias}/promotions/{promotion['id']}"))
    _show_decision(promotion)
    return promotion


@adapters_app.command("promote")
def adapters_promote(
    alias: Annotated[str, typer.Argument(help="Alias to promote onto.")],
    candidate: Annotated[str, typer.Argument(help="`name@version` to evaluate against the alias's target.")],
    dataset: Annotated[Path, typer.Option(help="Evaluation rows (JSONL).", exists=True, dir_okay=False)],
    require: Annotated[list[str], typer.Option(help="Gate requirement, e.g. 'rouge_l>base' (repeatable).")],
    collection: Annotated[str | None, typer.Option(help="Retrieval collection to ground answers.")] = None,
    steps: Annotated[str, typer.Option(help="Candidate weights per step, e.g. 10,50,100.")] = "100",
    step_interval: Annotated[
        float, typer.Option(help="Seconds of soak between steps (watched; a regression reverts the alias).")
    ] = 0.0,
    soak_max_error_rate_delta: Annotated[
        float | None,
        typer.Option(
            help="Soak: largest excess of the candidate's 5xx rate over the baseline's [server: 0.05]."
        ),
    ] = None,
    soak_max_latency_ratio: Annotated[
        float | None,
        typer.Option(help="Soak: largest candidate/baseline mean latency ratio [server: 2.0]."),
    ] = None,
    soak_min_requests: Annotated[
        int | None, typer.Option(help="Soak: candidate requests in a step before it is judged [server: 20].")
    ] = None,
    reason: Annotated[str | None, typer.Option(help="Why (kept in the history).")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the decision and show it.")] = True,
    url: UrlOpt = None,
    key: KeyOpt = None,
) -> None:
    """Evaluate CANDIDATE against ALIAS's current target on the same samples; move the alias only if the gate
    passes. Exits 1 when the gate rejects it."""
    # Only what the user set: the defaults live in one place, the server's SoakWatch.
    given = {
        "max_error_rate_delta": soak_max_error_rate_delta,
        "max_latency_ratio": soak_max_latency_ratio,
        "min_requests": soak_min_requests,
    }
    soak = {name: value for name, value in given.items() if value is not None}
    body = promotion_body(
        candidate,
        dataset,
        require,
        collection=collection,
        steps=steps,
        step_interval_s=step_interval,
        soak=soak or None,
        reason=reason,
    )
    promotion = run_promotion(alias, body, url=url, key=key, wait=wait)
    if wait and promotion["status"] != "promoted":
        raise typer.Exit(1)


def _show_decision(promotion: dict[str, Any]) -> None:
    decision = promotion.get("decision") or {}
    table = Table(
        "requirement",
        "observed",
        "95 % CI",
        "n",
        "failed",
        "judge",
        "result",
        title=f"{promotion['candidate']} vs {promotion['baseline']} (dataset sha256 {promotion['dataset_sha256'][:12]})",
    )
    for check in decision.get("checks", []):
        low, high = check.get("ci_low"), check.get("ci_high")
        table.add_row(
            check["requirement"],
            "–" if check.get("observed") is None else f"{check['observed']:+.3f}",
            "–" if low is None or high is None else f"[{low:+.3f}, {high:+.3f}]",
            str(check.get("n", 0)),
            check.get("failed") or "",
            check.get("judge") or "",
            "pass" if check["passed"] else "FAIL: " + "; ".join(check.get("reasons", [])),
        )
    console.print(table)
    for soak in promotion.get("soaks") or []:
        cand, base = soak["candidate"], soak["baseline"]
        console.print(
            f"soak at {soak['step']} % ({soak['seconds']:.0f} s): {soak['verdict']}; candidate "
            f"{cand['server_errors']}/{cand['requests']} 5xx, baseline {base['server_errors']}/{base['requests']} 5xx"
            + "".join(f"\n  {reason}" for reason in soak["reasons"])
        )
    colour = "green" if promotion["status"] == "promoted" else "red"
    detail = f" ({promotion['error']})" if promotion.get("error") else ""
    console.print(f"[{colour}]{promotion['status']}[/{colour}]{detail}")


def _open_plane(migrate: bool) -> Any:
    from controlplane import ControlPlane, ControlPlaneError
    from ragswap import load_settings

    settings = load_settings()
    url = settings.server.database_url
    try:
        return ControlPlane.open(
            url.get_secret_value() if url is not None else None,
            state_dir=settings.server.state_dir,
            migrate=migrate,
            import_legacy=migrate,
        )
    except ControlPlaneError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from exc


@controlplane_app.command("migrate")
def controlplane_migrate() -> None:
    """Bring the schema to this version's head now (gateways and workers also do it at start), importing a
    file-based state dir into an empty database."""
    from controlplane import current_revision, safe_url

    plane = _open_plane(migrate=True)
    try:
        console.print(f"{safe_url(plane.db.url)}: revision {current_revision(plane.db)}")
        if plane.imported is not None:
            console.print(f"imported {plane.imported}")
    finally:
        plane.close()


@controlplane_app.command("status")
def controlplane_status() -> None:
    """Schema revision, change counter, live gateways, engines as last reconciled, job counts."""
    from controlplane import current_revision, head_revision, safe_url

    plane = _open_plane(migrate=False)
    try:
        revision = current_revision(plane.db)
        console.print(
            f"{safe_url(plane.db.url)}: revision {revision} (this ragswap: {head_revision()}), "
            f"change {plane.registry.change() if revision else '-'}"
        )
        if revision is None:
            return
        gateways = Table("gateway", "host:pid", "heartbeat age s", "applied change", "draining")
        for g in plane.instances.gateways(ttl_s=60):
            gateways.add_row(
                g.id, f"{g.host}:{g.pid}", f"{g.heartbeat_age_s:.1f}", str(g.applied_change), ",".join(g.busy)
            )
        console.print(gateways)
        engines = Table("engine", "reconciled change", "adapters", "by", "loads", "error")
        for e in plane.instances.engines():
            engines.add_row(
                e.url,
                str(e.reconciled_change),
                str(len(e.held)),
                e.reconciled_by,
                str(e.loads),
                e.last_error or "",
            )
        console.print(engines)
        counts = {s: plane.jobs.count(s) for s in ("queued", "running", "succeeded", "failed", "cancelled")}
        console.print("jobs: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    finally:
        plane.close()


@cli_app.command("serve")
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
    from ragswap import load_settings
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


@cli_app.command("worker")
def worker_cmd(
    gateway_url: Annotated[
        str | None,
        typer.Option(help="Gateway (or load balancer) the jobs run against (worker.gateway_url)."),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(help="Jobs run at once (worker.concurrency).", min=1, max=16)
    ] = None,
    health_port: Annotated[
        int | None, typer.Option(help="Serve /health and /ready on this port (worker.health_port).")
    ] = None,
    embedded_by: Annotated[
        int | None,
        typer.Option("--embedded-by", hidden=True, help="Started by this gateway pid; settings on stdin."),
    ] = None,
) -> None:
    """Run evaluation jobs from the control plane's queue until interrupted (SIGTERM hands the job back).

    On PostgreSQL (server.database_url) run as many as you like, anywhere that reaches the database and a
    gateway; `ragswap serve` on the embedded SQLite database already runs one itself.
    """
    import json
    import sys

    from ragswap import Settings, load_settings
    from serving.evaluations.worker import run_worker_process

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    settings = Settings(**json.loads(sys.stdin.read())) if embedded_by else load_settings()
    update = {
        k: v
        for k, v in {
            "gateway_url": gateway_url,
            "concurrency": concurrency,
            "health_port": health_port,
        }.items()
        if v is not None
    }
    if update:
        settings = settings.model_copy(update={"worker": settings.worker.model_copy(update=update)})
    run_worker_process(settings, embedded_by=embedded_by)


cli_app.add_typer(controlplane_app, name="controlplane")
