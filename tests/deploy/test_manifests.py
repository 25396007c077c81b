"""The deployment files only use settings and commands ragswap really has, and describe the scale-out setup they
claim: PostgreSQL + Qdrant server + ≥ 2 stateless gateways + engines + workers, with probes and disruption budgets
on the endpoints the processes really serve."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ragswap.cli import app
from ragswap.config import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NOT_SETTINGS = {"RAGSWAP_CONFIG", "RAGSWAP_HOME", "RAGSWAP_VENV", "RAGSWAP_API_KEY", "RAGSWAP_ADMIN_KEY"}


def _documents() -> list[tuple[Path, Any]]:
    docs = []
    for path in sorted(DEPLOY.rglob("*.y*ml")):
        docs += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def _k8s(kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        doc
        for path, doc in _documents()
        if path.parent.name in ("k8s", "multinode")
        and doc.get("kind") == kind
        and (name is None or doc["metadata"]["name"] == name)
    ]


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return doc


def _walk(node: Any) -> Any:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _placeholders(value: str) -> str:
    """compose interpolation (``${VAR:?msg}``) → a placeholder value."""
    return re.sub(r"\$\{[^}]+\}", "sk-placeholder-value", value)


def _env_vars() -> dict[str, str]:
    found: dict[str, str] = {}
    for _, doc in _documents():
        for node in _walk(doc):
            if (
                isinstance(node, dict)
                and "name" in node
                and "value" in node
                and str(node["name"]).startswith("RAGSWAP_")
            ):
                found[node["name"]] = str(node["value"])
            if isinstance(node, dict):
                for key in ("environment", "stringData"):
                    if isinstance(node.get(key), dict):
                        found.update({k: str(v) for k, v in node[key].items() if k.startswith("RAGSWAP_")})
    return {k: _placeholders(v) for k, v in found.items() if k not in NOT_SETTINGS}


def _containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    return containers


def test_every_ragswap_env_var_in_deploy_is_a_real_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env_vars()
    assert {"RAGSWAP_ENGINE__URLS", "RAGSWAP_SERVER__ADMIN_KEYS", "RAGSWAP_SERVER__DATABASE_URL"} <= set(env)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RAGSWAP_CONFIG", raising=False)
    settings = Settings()  # extra="forbid" all the way down: a misspelt variable fails here
    assert settings.engine.urls and settings.server.admin_keys
    assert settings.server.database_url is not None
    assert settings.server.database_url.get_secret_value().startswith("postgresql://")


def test_configmap_yaml_is_valid_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configmap = _k8s("ConfigMap", "ragswap-config")[0]
    path = tmp_path / "ragswap.yaml"
    path.write_text(configmap["data"]["ragswap.yaml"])
    monkeypatch.setenv("RAGSWAP_CONFIG", str(path))
    settings = Settings()
    assert len(settings.engine.urls) == 2
    assert settings.server.adapter_roots == [Path("/var/lib/ragswap/adapters")]
    assert settings.retrieval.url == "http://ragswap-qdrant:6333"  # shared collections: the Qdrant server
    assert settings.worker.gateway_url == "http://ragswap-gateway"  # the gateway Service
    worker = _k8s("Deployment", "ragswap-worker")[0]
    ports = {p["name"]: p["containerPort"] for p in _containers(worker)[0]["ports"]}
    assert ports["health"] == settings.worker.health_port
    # Every engine URL names a pod of the engine StatefulSet behind its headless Service.
    engine = _k8s("StatefulSet", "ragswap-engine")[0]
    for i, url in enumerate(settings.engine.urls):
        assert (
            url
            == f"http://{engine['metadata']['name']}-{i}.{engine['spec']['serviceName']}:{settings.engine.port}"
        )
    assert engine["spec"]["replicas"] == len(settings.engine.urls)


def test_container_commands_exist() -> None:
    commands = set()
    for _, doc in _documents():
        for node in _walk(doc):
            if (
                isinstance(node, dict)
                and isinstance(node.get("command"), list)
                and node["command"][0] == "ragswap"
            ):
                commands.add(tuple(node["command"][1:]))
            if (
                isinstance(node, dict)
                and isinstance(node.get("command"), list)
                and node["command"][:2]
                == [
                    "sh",
                    "-c",
                ]
            ):  # e.g. "ray start --head ... && exec ragswap engine"
                for part in node["command"][2].split("&&"):
                    words = part.split()
                    if "ragswap" in words:
                        commands.add(tuple(words[words.index("ragswap") + 1 :]))
    assert {("engine",), ("serve", "--host", "0.0.0.0"), ("worker",)} <= commands
    runner = CliRunner()
    for command in commands:
        result = runner.invoke(
            app, [*[c for c in command if not c.startswith("-") and c != "0.0.0.0"], "--help"]
        )
        assert result.exit_code == 0, (command, result.output)
        for option in (c for c in command if c.startswith("--")):
            assert option in result.output, (command, option)


def test_kubernetes_scale_out_shape() -> None:
    gateway = _k8s("Deployment", "ragswap-gateway")[0]
    assert gateway["spec"]["replicas"] >= 2
    container = _containers(gateway)[0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["RAGSWAP_WORKER__EMBEDDED"] == "off"  # jobs run on the worker Deployment
    volumes = {v["name"]: v for v in gateway["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes["state"]  # nothing of the gateway's state is shared any more
    assert {"ragswap-state"} & {c["metadata"]["name"] for c in _k8s("PersistentVolumeClaim")} == set()

    worker = _containers(_k8s("Deployment", "ragswap-worker")[0])[0]
    assert worker["command"] == ["ragswap", "worker"]
    assert worker["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "health"}
    assert worker["livenessProbe"]["httpGet"] == {"path": "/health", "port": "health"}

    for name in ("ragswap-engine", "ragswap-postgres", "ragswap-qdrant"):
        assert _k8s("StatefulSet", name), name
        assert _k8s("Service", name), name
    # Each disruption budget guards a workload that exists (its selector matches that workload's pods).
    budgets = {pdb["metadata"]["name"]: pdb for pdb in _k8s("PodDisruptionBudget")}
    assert {"ragswap-gateway", "ragswap-worker", "ragswap-engine"} <= set(budgets)
    workloads = _k8s("Deployment") + _k8s("StatefulSet")
    for pdb in budgets.values():
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert any(
            selector.items() <= w["spec"]["template"]["metadata"]["labels"].items() for w in workloads
        ), pdb["metadata"]["name"]
    assert budgets["ragswap-gateway"]["spec"]["minAvailable"] >= 1

    kustomization = next(d for p, d in _documents() if p == DEPLOY / "k8s" / "kustomization.yaml")
    assert set(kustomization["resources"]) == {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {
        "kustomization.yaml"
    }


def test_compose_scale_out_shape() -> None:
    services = _compose()["services"]
    gateways = [s for s in services.values() if s.get("command", [None])[:2] == ["ragswap", "serve"]]
    engines = [s for s in services.values() if s.get("command") == ["ragswap", "engine"]]
    workers = [s for s in services.values() if s.get("command") == ["ragswap", "worker"]]
    assert len(gateways) == 2 and len(engines) == 2 and len(workers) == 1
    assert workers[0]["deploy"]["replicas"] >= 2
    assert services["postgres"]["image"].startswith("postgres:") and services["qdrant"]["image"].startswith(
        "qdrant/qdrant:"
    )
    for gateway in gateways:
        env = gateway["environment"]
        assert _placeholders(env["RAGSWAP_SERVER__DATABASE_URL"]).startswith("postgresql://ragswap:")
        assert "@postgres:5432/" in env["RAGSWAP_SERVER__DATABASE_URL"]
        assert env["RAGSWAP_RETRIEVAL__URL"] == "http://qdrant:6333"
        assert gateway["depends_on"]["postgres"]["condition"] == "service_healthy"
    upstream = (DEPLOY / "nginx.conf").read_text()
    names = [name for name, s in services.items() if s in gateways]
    assert all(f"server {name}:8000" in upstream for name in names)
    assert workers[0]["environment"]["RAGSWAP_WORKER__GATEWAY_URL"] == "http://lb:8000"
