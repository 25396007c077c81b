"""Request fields shared by chat and text completions, validated as OpenAI documents them.

Unknown fields are kept (``extra="allow"``) and passed to vLLM, which accepts its own sampling extensions
(``top_k``, ``min_p``, ``repetition_penalty``, ...) and rejects what it does not know with a 400.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """``text``, ``json_object``, or ``json_schema`` (vLLM enforces it with structured output)."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_when_needed(self) -> Self:
        if self.type == "json_schema" and (self.json_schema is None or self.json_schema.schema_ is None):
            raise ValueError("response_format.json_schema.schema is required when type is 'json_schema'")
        return self


class SamplingRequest(BaseModel):
    """Sampling parameters common to ``/v1/chat/completions`` and ``/v1/completions``."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    model: str = Field(min_length=1, max_length=256)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**64)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    user: str | None = Field(default=None, max_length=256)
    stream: bool | None = False
    stream_options: StreamOptions | None = None

    @model_validator(mode="after")
    def _check_common(self) -> Self:
        if isinstance(self.stop, list) and (len(self.stop) > 16 or any(not s for s in self.stop)):
            raise ValueError("stop: at most 16 non-empty sequences")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options: only allowed when stream is true")
        if self.logit_bias and any(not -100 <= v <= 100 for v in self.logit_bias.values()):
            raise ValueError("logit_bias: values must lie in [-100, 100]")
        return self

    @property
    def wants_usage_chunk(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def engine_body(self, engine_model: str, exclude: set[str] | None = None) -> dict[str, Any]:
        """The request as the engine gets it: only what the client set, our own fields removed, usage forced on
        for streams (the gateway counts tokens; the usage chunk is dropped again if the client did not ask)."""
        body = self.model_dump(exclude_unset=True, exclude_none=True, by_alias=True, exclude=exclude)
        body["model"] = engine_model
        if self.stream:
            options = dict(body.get("stream_options") or {})
            options["include_usage"] = True
            body["stream_options"] = options
        return body
