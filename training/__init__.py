"""Training: LoRA/DoRA/QLoRA SFT and DPO adapters, adapter merge/export, reranker and embedder fine-tuning.

Heavy libraries (torch, transformers, TRL, peft, sentence-transformers) are imported inside the functions, so
importing this package stays cheap.
"""

from training.config import DatasetSpec, RecipeError, TrainConfig, load_config, parse_config
from training.data import DatasetError
from training.merge import MergeError, export_merged, merge_adapters
from training.register import RegisterError, register_adapter
from training.retrievers.common import RetrieverManifest, RetrieverTrainResult
from training.retrievers.embedder import train_embedder
from training.retrievers.reranker import train_reranker
from training.trainer import HardwareError, TrainResult, train

__all__ = [
    "DatasetError",
    "DatasetSpec",
    "HardwareError",
    "MergeError",
    "RecipeError",
    "RegisterError",
    "RetrieverManifest",
    "RetrieverTrainResult",
    "TrainConfig",
    "TrainResult",
    "export_merged",
    "load_config",
    "merge_adapters",
    "parse_config",
    "register_adapter",
    "train",
    "train_embedder",
    "train_reranker",
]
