"""Retrieval's domain errors; the HTTP layer maps them to 4xx answers, the CLI to messages."""

from __future__ import annotations


class RetrievalError(Exception):
    """Base class; ``param`` names what the caller should fix."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class CollectionNotFoundError(RetrievalError):
    """The collection does not exist (404)."""


class CollectionExistsError(RetrievalError):
    """A collection of that name already exists (409)."""


class InvalidDocumentError(RetrievalError):
    """Empty, binary or unparsable input (400)."""


class UnsupportedFormatError(RetrievalError):
    """A file type ingestion cannot read (415)."""


class InvalidFilterError(RetrievalError):
    """A metadata filter that cannot be evaluated (422)."""


class InvalidSearchError(RetrievalError):
    """Search options that cannot be honoured, e.g. reranking with no reranker configured (400)."""


class ModelLoadError(RetrievalError):
    """A model name or directory that does not hold a loadable model (400)."""


class StoreBusyError(RetrievalError):
    """The embedded store is held open by another process."""


class InvalidDatasetError(RetrievalError):
    """A judged dataset (BEIR folder, queries or qrels) that cannot be read (400)."""


class TuneRefusedError(RetrievalError):
    """Too few judged queries to tune a collection honestly (400)."""
