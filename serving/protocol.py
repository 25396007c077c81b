"""Request fields shared by chat and text completions, validated as OpenAI documents them.

Unknown fields are refused: a misspelt ``temprature`` is a 400 naming it (``param``, with the field it probably
meant), never a silently ignored setting. Types are strict, as OpenAI's are (``"stream": "yes"`` or
``"logprobs": 0`` is a 400, not a guess). What is accepted:

- every parameter OpenAI documents for the endpoint. The ones that have no effect on a self-hosted model
  (:data:`NO_EFFECT`: ``store``, ``metadata``, ``service_tier``...) are accepted and not forwarded, so clients
  that always send them (the official SDKs, LangChain) keep working; the ones whose meaning the engine cannot
  honour (``functions``, audio output, web search) are refused with ``code="unsupported_parameter"``;
- vLLM's own sampling and output extensions (``top_k``, ``min_p``, ``repetition_penalty``, ``structured_outputs``,
  ``ignore_eos``, ...), forwarded as they are (vLLM validates their values);
- ragswap's ``rag`` extension (chat).

vLLM fields that steer the engine rather than the sampling (``chat_template``, ``priority``, ``request_id``,
``kv_transfer_params``, ...) are refused: a gateway's clients must not run templates on, reorder or address the
engine. ``tests/serving/test_protocol.py`` checks every forwarded name against vLLM's own request models, so an
engine upgrade that drops one is noticed.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serving.errors import BadRequestError
from serving.settings import TokenLimits

#: OpenAI parameters accepted for compatibility that change nothing here (not forwarded to the engine).
NO_EFFECT: frozenset[str] = frozenset(
    {
        "store",
        "metadata",
        "service_tier",
        "prompt_cache_key",
        "safety_identifier",
        "prediction",
        "verbosity",
        "modalities",
    }
)

#: Fields vLLM's server knows but this gateway refuses from clients, with the reason given in the error.
ENGINE_CONTROL: dict[str, str] = {
    "chat_template": "request-supplied chat templates would run on the engine; the model's own template is used",
    "priority": "scheduling priority is set by the operator, not per request",
    "request_id": "the engine request id is the gateway's; send `x-request-id` to correlate logs",
    "kv_transfer_params": "disaggregated-serving internals are not exposed",
    "ec_transfer_params": "disaggregated-serving internals are not exposed",
    "mm_payload": "engine internals are not exposed",
    "media_io_kwargs": "media loading options are set by the operator",
    "prompt_embeds": "prompt embeddings are not accepted by this gateway",
}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """``text``, ``json_object``, or ``json_schema`` (vLLM enforces it with structured output)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_when_needed(self) -> Self:
        if self.type == "json_schema" and (self.json_schema is None or self.json_schema.schema_ is None):
            raise ValueError("response_format.json_schema.schema is required when type is 'json_schema'")
        return self


class SamplingRequest(BaseModel):
    """Sampling parameters common to ``/v1/chat/completions`` and ``/v1/completions``."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    unsupported: ClassVar[dict[str, str]] = ENGINE_CONTROL
    """Field name → why it is refused (rendered by :func:`serving.errors.validation_error`)."""
    token_fields: ClassVar[tuple[str, ...]] = ("max_tokens",)
    """The fields that bound the completion length (checked against the caller's :class:`TokenLimits`)."""

    # OpenAI
    model: str = Field(min_length=1, max_length=256)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    user: str | None = Field(default=None, max_length=256)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    # OpenAI, no effect here (NO_EFFECT)
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = Field(default=None, max_length=64)
    prompt_cache_key: str | None = Field(default=None, max_length=1024)
    safety_identifier: str | None = Field(default=None, max_length=256)
    # vLLM sampling and output extensions (forwarded; vLLM checks their values)
    top_k: int | None = Field(default=None, ge=-1)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0)
    length_penalty: float | None = None
    use_beam_search: bool | None = None
    min_tokens: int | None = Field(default=None, ge=0)
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool | None = None
    ignore_eos: bool | None = None
    skip_special_tokens: bool | None = None
    spaces_between_special_tokens: bool | None = None
    add_special_tokens: bool | None = None
    truncate_prompt_tokens: int | None = Field(default=None, ge=-1)
    truncation_side: Literal["left", "right"] | None = None
    prompt_logprobs: int | None = Field(default=None, ge=0, le=20)
    allowed_token_ids: list[int] | None = None
    bad_words: list[str] | None = None
    structured_outputs: dict[str, Any] | None = None
    """vLLM's structured output (``{"json": ...}``, ``{"regex": ...}``, ``{"choice": [...]}``, ...)."""
    return_tokens_as_token_ids: bool | None = None
    return_token_ids: bool | None = None
    cache_salt: str | None = Field(default=None, max_length=256)
    vllm_xargs: dict[str, Any] | None = None

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

    def apply_token_limits(self, limits: TokenLimits) -> None:
        """Refuse a length above the caller's limit (400 naming the field); fill in the default when unset."""
        limit = limits.max_tokens_limit
        for name in self.token_fields:
            value = getattr(self, name)
            if limit is not None and value is not None and value > limit:
                raise BadRequestError(
                    f"{name}: {value} is more than this API key may ask for ({limit})",
                    param=name,
                    code="max_tokens_too_large",
                )
        if limits.default_max_tokens is not None and all(getattr(self, n) is None for n in self.token_fields):
            self.max_tokens = limits.default_max_tokens

    def engine_body(self, engine_model: str, exclude: set[str] | None = None) -> dict[str, Any]:
        """The request as the engine gets it: only what the client set, our own and no-effect fields removed,
        usage forced on for streams (the gateway counts tokens; the usage chunk is dropped again if the client
        did not ask for it)."""
        body = self.model_dump(
            exclude_unset=True, exclude_none=True, by_alias=True, exclude=(exclude or set()) | NO_EFFECT
        )
        body["model"] = engine_model
        if self.stream:
            options = dict(body.get("stream_options") or {})
            options["include_usage"] = True
            body["stream_options"] = options
        return body


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int
    finish_reason: str | None = None


class CompletionResponseBase(BaseModel):
    """What the engine answers, as the OpenAPI document describes it (the gateway passes the engine's body on,
    with ``model`` set to the requested name; fields beyond these are vLLM's own)."""

    model_config = ConfigDict(extra="allow")

    id: str
    created: int
    model: str
    usage: Usage | None = None
