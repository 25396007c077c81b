"""ragswap: hot-swappable LoRA serving on vLLM, hybrid RAG on Qdrant, LoRA training and RAG evaluation.

The public entry points are the ``ragswap`` command (:mod:`ragswap.cli`) and :func:`ragswap.config.load_settings`;
each product area is its own package: ``serving``, ``retrieval``, ``training``, ``eval``.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
