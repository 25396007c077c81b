"""``/v1/chat/completions``: protocol, proxy service, router and the RAG augmenter contract."""

from serving.chat.rag import RagAugmenter

__all__ = ["RagAugmenter"]
