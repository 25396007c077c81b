"""The contract between chat completions and retrieval-augmented generation.

The chat service knows nothing about retrieval: when a request carries ``rag`` options (``extra_body={"rag":
{...}}`` with the openai client), or the adapter/alias it targets has a default collection, it calls the object at
``app.state.rag_augmenter``. The retrieval package implements :class:`RagAugmenter` and sets that attribute from
its router module's ``lifespan`` hook.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field


class RagOptions(BaseModel):
    """What a request may ask of retrieval (a misspelt option is a 400 naming it, not silently ignored)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    collection: str | None = Field(default=None, min_length=1, max_length=128)
    """Collection to search; defaults to the one bound to the adapter or alias."""
    top_k: int | None = Field(default=None, ge=1, le=100)
    mode: Literal["hybrid", "dense", "sparse"] | None = None
    rerank: bool | None = None
    filter: dict[str, Any] | None = None
    """Metadata filter, as for ``POST /v1/retrieve``."""
    min_score: float | None = None
    """Passages scoring below it are not cited."""
    history_turns: int | None = Field(default=None, ge=0, le=100)
    """Earlier user turns folded into the retrieval query."""


@runtime_checkable
class RagAugmenter(Protocol):
    """Grounds a conversation in retrieved passages."""

    async def augment(
        self, messages: list[dict[str, Any]], options: dict[str, Any], model: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Return the grounded messages and the citations (one dict per passage the prompt cites).

        Args:
            messages: the request's chat messages (OpenAI format, plain dicts).
            options: :class:`RagOptions` as a dict, ``collection`` always set; unset fields are omitted.
            model: the public model name the request targets (base model, adapter, ``name@version`` or alias).

        Raises:
            serving.errors.NotFoundError: unknown collection (rendered as 404).
            serving.errors.BadRequestError: invalid options (rendered as 400).
        """
        ...
