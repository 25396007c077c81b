"""The neural models retrieval uses: a sentence-transformers embedder and an optional CrossEncoder reranker.

Both resolve catalog names through the offline model store (no hub downloads). :func:`load_embedder` and
:func:`load_reranker` load a fresh copy; a :class:`ModelCache`, owned by the service that uses it, loads each once
and shares it among that service's collections.
"""

from __future__ import annotations

import json
import logging
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ragswap import ModelSettings, ModelStoreError, model_loading, resolve_model
from retrieval.errors import ModelLoadError
from retrieval.settings import EmbeddingPrecision

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder, SentenceTransformer

logger = logging.getLogger(__name__)
RETRIEVER_MANIFEST = "ragswap-retriever.json"
"""Written next to the weights by ``training.train_reranker`` / ``train_embedder``."""


class Embedder:
    """L2-normalised sentence embeddings (cosine = dot product) and the tokenizer that sizes chunks."""

    def __init__(
        self, model: SentenceTransformer, name: str, precision: EmbeddingPrecision = "float32"
    ) -> None:
        self.model = model
        self.name = name
        self.precision = precision
        self.dimension = int(model.get_embedding_dimension() or 0)
        self.max_tokens = int(model.max_seq_length or 256)

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


class Reranker:
    """A cross-encoder that scores (query, passage) pairs jointly: the second, precise stage."""

    def __init__(self, model: CrossEncoder, name: str, recommended_weight: float = 1.0) -> None:
        self.model = model
        self.name = name
        self.recommended_weight = recommended_weight
        """Blend weight with the first stage its training found best (1 = the cross-encoder's order alone)."""

    def score(self, query: str, passages: list[str], batch_size: int = 32) -> np.ndarray:
        if not passages:
            return np.zeros(0, dtype=np.float32)
        scores = self.model.predict(
            [(query, p) for p in passages], batch_size=batch_size, show_progress_bar=False
        )
        return np.asarray(scores, dtype=np.float32).reshape(len(passages))


class ModelCache:
    """The embedders and rerankers of one :class:`~retrieval.RetrievalService`, each loaded on first use and then
    shared by every collection of that service that names it. Thread-safe; a load holds the cache's lock."""

    def __init__(self, models: ModelSettings) -> None:
        self.models = models
        self._lock = threading.Lock()
        self._embedders: dict[tuple[str, EmbeddingPrecision], Embedder] = {}
        self._rerankers: dict[str, Reranker] = {}

    def embedder(self, name: str, precision: EmbeddingPrecision = "float32") -> Embedder:
        """:func:`load_embedder`, once per name and precision."""
        with self._lock:
            if (name, precision) not in self._embedders:
                self._embedders[name, precision] = load_embedder(name, self.models, precision)
            return self._embedders[name, precision]

    def reranker(self, name: str) -> Reranker:
        """:func:`load_reranker`, once per name."""
        with self._lock:
            if name not in self._rerankers:
                self._rerankers[name] = load_reranker(name, self.models)
            return self._rerankers[name]


def load_embedder(name: str, models: ModelSettings, precision: EmbeddingPrecision = "float32") -> Embedder:
    """The embedder for a catalog name or directory at a precision (a new copy each call: see :class:`ModelCache`).

    Raises:
        ModelLoadError: ``name`` is neither a prepared catalog model nor a directory sentence-transformers loads
            (a file, a non-model directory, a hub id while offline).
    """
    try:
        path = resolve_model(name, models)
    except ModelStoreError as exc:
        raise ModelLoadError(str(exc), param="embedding_model") from exc
    from sentence_transformers import SentenceTransformer

    logger.info("loading embedder", extra={"model": path, "precision": precision})
    try:
        with model_loading():
            model = SentenceTransformer(path, device="cpu")
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"embedding model {name!r} cannot be loaded: it is neither a prepared catalog model nor a "
            "local sentence-transformers directory",
            param="embedding_model",
        ) from exc
    if precision == "int8":
        quantize_int8(model)
    return Embedder(model, name, precision)


def quantize_int8(model: SentenceTransformer) -> None:
    """Swap the transformer's ``nn.Linear`` layers for int8 ones in place (PyTorch dynamic quantization: weights
    int8 per output channel, activations quantized per batch on the fly).

    On CPU this roughly halves encoding time; torchao's int8 path is ~1.1× here without ``torch.compile`` and
    optimum's ONNX export does not support transformers 5, so this is the fast int8 path available. PyTorch marks
    the eager quantization API deprecated (torchao is its successor); its warnings are silenced here only.
    """
    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    transformer = model[0]  # sentence-transformers' Transformer module; ``.model`` is the Hugging Face model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (DeprecationWarning, UserWarning, FutureWarning))
        transformer.model = quantize_dynamic(
            transformer.model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8
        )


def load_reranker(name: str, models: ModelSettings) -> Reranker:
    """A trained CrossEncoder directory (``training.train_reranker`` writes one); a new copy each call."""
    from sentence_transformers import CrossEncoder

    path = resolve_model(name, models)
    weight = recommended_rerank_weight(Path(path))
    logger.info("loading reranker", extra={"model": path, "recommended_weight": weight})
    with model_loading():
        cross_encoder = CrossEncoder(path, device="cpu")
    return Reranker(cross_encoder, name, weight)


def recommended_rerank_weight(folder: Path) -> float:
    """``metrics.recommended_rerank_weight`` of a ragswap-trained reranker's manifest; 1 for any other
    CrossEncoder (or an unreadable manifest: a bad file must not stop search)."""
    manifest = folder / RETRIEVER_MANIFEST
    try:
        weight = json.loads(manifest.read_text())["metrics"]["recommended_rerank_weight"]
    except (OSError, ValueError, KeyError, TypeError):
        return 1.0
    return float(weight) if isinstance(weight, int | float) and 0 <= weight <= 1 else 1.0
