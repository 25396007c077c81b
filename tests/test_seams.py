"""The seams between top-level packages, checked over the source tree with ``ast``.

- A module imports a *sibling* top-level package only through that package's ``__init__`` and only names in its
  ``__all__`` (``from retrieval import RetrievalService``; never ``from retrieval.store.base import ...`` or
  ``import retrieval.loaders``). Inside one package anything goes.
- Settings objects are built only at the entry points (CLI commands, the app factory, workers, the demo), never
  deep in library code: constructing ``Settings``/a settings section or calling ``load_settings()`` anywhere else
  is a failure.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ragswap", "serving", "retrieval", "training", "eval", "controlplane")
# Where settings are built: the CLI layer (every package's ``cli.py``), the app factory, the demo (and bench/ and
# tests/, which are not scanned). The settings modules themselves compose their sections.
ENTRY_POINTS = ("serving/app.py", "ragswap/demo.py")
SETTINGS_MODULES = ("ragswap/config.py", "ragswap/settings_base.py")
# Constructions that are not configuration, each with its reason.
NOT_CONFIGURATION = {
    ("training/retrievers/mining.py", "Bm25Settings"): "BM25 defaults for mining judged data (no collection)",
}


def _package_all(package: str) -> set[str]:
    # Packages keep their imports lazy (module __getattr__), so importing one to read __all__ is cheap.
    names = getattr(importlib.import_module(package), "__all__", None)
    assert names is not None, f"{package}/__init__.py has no __all__"
    return set(names)


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES if (ROOT / pkg).is_dir() for p in (ROOT / pkg).rglob("*.py"))


def _violations() -> list[str]:
    exported = {pkg: _package_all(pkg) for pkg in PACKAGES if (ROOT / pkg / "__init__.py").is_file()}
    found = []
    for path in _sources():
        own = path.relative_to(ROOT).parts[0]
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    top, _, rest = alias.name.partition(".")
                    if top in exported and top != own and rest:
                        found.append(f"{where}: import {alias.name} (use `from {top} import ...`)")
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                top, _, rest = node.module.partition(".")
                if top not in exported or top == own:
                    continue
                if rest:
                    found.append(f"{where}: from {node.module} import ... (reaches past {top}/__init__)")
                    continue
                for alias in node.names:
                    if alias.name not in exported[top]:
                        found.append(f"{where}: from {top} import {alias.name} (not in {top}.__all__)")
    return found


def test_siblings_import_only_each_others_public_names() -> None:
    problems = _violations()
    assert not problems, "imports past a sibling package's __all__:\n" + "\n".join(problems)


def _is_settings_module(rel: str) -> bool:
    return rel in SETTINGS_MODULES or rel.endswith("/settings.py")


def _settings_names() -> set[str]:
    """Every class defined in a settings module (``Settings``, ``ModelSettings``, ``ChunkingSettings``, ...) and
    ``load_settings``."""
    names = {"load_settings"}
    for path in _sources():
        if _is_settings_module(path.relative_to(ROOT).as_posix()):
            tree = ast.parse(path.read_text(), filename=str(path))
            names |= {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    return names


def _settings_constructions() -> list[str]:
    names = _settings_names()
    found = []
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        if rel.endswith("/cli.py") or rel in ENTRY_POINTS or _is_settings_module(rel):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else None
            )
            if name in names and (rel, name) not in NOT_CONFIGURATION:
                found.append(f"{rel}:{node.lineno}: {name}(...)")
    return found


def test_settings_are_built_only_at_entry_points() -> None:
    assert {"Settings", "ModelSettings", "RetrievalSettings", "ChunkingSettings"} <= _settings_names()
    problems = _settings_constructions()
    assert not problems, "settings built outside the entry points (pass them down instead):\n" + "\n".join(
        problems
    )


def test_every_settings_section_rejects_unknown_keys() -> None:
    from pydantic import BaseModel

    sections = []
    for path in _sources():
        rel = path.relative_to(ROOT)
        if _is_settings_module(rel.as_posix()):
            module = importlib.import_module(".".join(rel.with_suffix("").parts))
            sections += [
                value
                for value in vars(module).values()
                if isinstance(value, type)
                and issubclass(value, BaseModel)
                and value.__module__ == module.__name__
            ]
    assert len(sections) >= 10
    lax = [cls.__qualname__ for cls in sections if cls.model_config.get("extra") != "forbid"]
    assert not lax, f"settings sections without extra='forbid': {lax}"


@pytest.mark.parametrize(
    ("env", "yaml", "named"),
    [
        ({"RAGSWAP_RETRIEVAL__CHUNKING__SIZEE": "300"}, None, "retrieval.chunking.sizee"),
        ({"RAGSWAP_ENGINE__PARALLEL__TENSOR_PARALEL": "2"}, None, "engine.parallel.tensor_paralel"),
        ({}, "retrieval:\n  search:\n    top_kk: 3\n", "retrieval.search.top_kk"),
        ({}, "server:\n  port: 9000\nsevrer:\n  port: 1\n", "sevrer"),
    ],
)
def test_a_misspelt_nested_key_fails_at_start_naming_it(
    env: dict[str, str], yaml: str | None, named: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import ValidationError
    from typer.testing import CliRunner

    from ragswap import load_settings
    from ragswap.cli import app

    monkeypatch.chdir(tmp_path)  # no ./ragswap.yaml of the caller's
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if yaml is not None:
        (tmp_path / "ragswap.yaml").write_text(yaml)
        monkeypatch.setenv("RAGSWAP_CONFIG", str(tmp_path / "ragswap.yaml"))
    with pytest.raises(ValidationError, match="extra_forbidden") as failure:
        load_settings()
    assert named in str(failure.value)
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code != 0
    assert isinstance(result.exception, ValidationError) and named in str(result.exception)
