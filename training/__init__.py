"""Training: LoRA/DoRA/QLoRA SFT and DPO adapters, adapter merge/export, reranker and embedder fine-tuning.

Heavy libraries (torch, transformers, TRL, peft, sentence-transformers) are imported inside the functions, so
importing this package stays cheap; its commands (``cli_app``, ``adapters_app``, added to the root by
``ragswap.cli``) load lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from training.config import DatasetSpec, RecipeError, TrainConfig, load_config, parse_config
from training.data import DatasetError
from training.merge import MergeError, export_merged, merge_adapters
from training.register import RegisterError, register_adapter
from training.retrievers.common import RetrieverConfig, RetrieverManifest, RetrieverTrainResult
from training.retrievers.embedder import EmbedderConfig, train_embedder
from training.retrievers.reranker import RerankerConfig, train_reranker
from training.trainer import HardwareError, TrainResult, train

if TYPE_CHECKING:
    from training.cli import adapters_app, cli_app

__all__ = [
    "DatasetError",
    "DatasetSpec",
    "EmbedderConfig",
    "HardwareError",
    "MergeError",
    "RecipeError",
    "RegisterError",
    "RerankerConfig",
    "RetrieverConfig",
    "RetrieverManifest",
    "RetrieverTrainResult",
    "TrainConfig",
    "TrainResult",
    "adapters_app",
    "cli_app",
    "export_merged",
    "load_config",
    "merge_adapters",
    "parse_config",
    "register_adapter",
    "train",
    "train_embedder",
    "train_reranker",
]


def __getattr__(name: str) -> Any:
    if name in ("adapters_app", "cli_app"):
        from training import cli

        return getattr(cli, name)
    raise AttributeError(name)
