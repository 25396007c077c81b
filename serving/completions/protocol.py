"""``POST /v1/completions`` request body (unknown fields are refused: see :mod:`serving.protocol`)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from serving.protocol import CompletionChoice, CompletionResponseBase, SamplingRequest


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    suffix: str | None = None
    echo: bool | None = None
    logprobs: int | None = Field(default=None, ge=0, le=20)
    best_of: int | None = Field(default=None, ge=1, le=16)
    """Only 1 (or ``n``): vLLM samples ``n`` completions and returns them all; it does not rank a larger set."""

    @model_validator(mode="after")
    def _check_best_of(self) -> Self:
        if self.best_of is not None and self.best_of not in (1, self.n or 1):
            raise ValueError(
                "best_of: only best_of equal to n is supported (the engine does not rank samples)"
            )
        return self

    def engine_body(self, engine_model: str, exclude: set[str] | None = None) -> dict[str, object]:
        return super().engine_body(engine_model, (exclude or set()) | {"best_of"})


class TextChoice(CompletionChoice):
    text: str


class CompletionResponse(CompletionResponseBase):
    object: Literal["text_completion"]
    choices: list[TextChoice]
