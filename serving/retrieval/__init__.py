"""``/v1/collections`` and ``/v1/retrieve``, and the RAG augmenter the chat service calls."""

from serving.retrieval.service import RetrievalAugmenter, RetrievalGateway

__all__ = ["RetrievalAugmenter", "RetrievalGateway"]
