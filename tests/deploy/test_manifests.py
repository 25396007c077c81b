"""The deployment files only use settings and commands ragswap really has."""

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


def _walk(node: Any) -> Any:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


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
    # compose interpolation (${VAR:?msg}) -> a placeholder value
    return {
        k: re.sub(r"\$\{[^}]+\}", "sk-placeholder-value", v)
        for k, v in found.items()
        if k not in NOT_SETTINGS
    }


def test_every_ragswap_env_var_in_deploy_is_a_real_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env_vars()
    assert "RAGSWAP_ENGINE__URLS" in env and "RAGSWAP_SERVER__ADMIN_KEYS" in env
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RAGSWAP_CONFIG", raising=False)
    settings = Settings()  # extra="forbid" all the way down: a misspelt variable fails here
    assert settings.engine.urls and settings.server.admin_keys


def test_configmap_yaml_is_valid_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configmap = next(doc for _, doc in _documents() if doc.get("kind") == "ConfigMap")
    path = tmp_path / "ragswap.yaml"
    path.write_text(configmap["data"]["ragswap.yaml"])
    monkeypatch.setenv("RAGSWAP_CONFIG", str(path))
    settings = Settings()
    assert len(settings.engine.urls) == 2
    assert settings.server.adapter_roots == [Path("/var/lib/ragswap/adapters")]


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
    assert ("engine",) in commands and ("serve", "--host", "0.0.0.0") in commands
    runner = CliRunner()
    for command in commands:
        result = runner.invoke(
            app, [*[c for c in command if not c.startswith("-") and c != "0.0.0.0"], "--help"]
        )
        assert result.exit_code == 0, (command, result.output)
        for option in (c for c in command if c.startswith("--")):
            assert option in result.output, (command, option)
