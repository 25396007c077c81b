"""``POST /v1/chat/completions`` request body (unknown fields are refused: see :mod:`serving.protocol`)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serving.chat.rag import RagOptions
from serving.protocol import ENGINE_CONTROL, CompletionChoice, CompletionResponseBase, SamplingRequest


class ChatMessage(BaseModel):
    """One message as OpenAI (and vLLM) define it; content may be a string or a list of parts."""

    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    """Assistant turns that called tools (replayed history)."""
    tool_call_id: str | None = None
    """Tool turns: the call this message answers."""
    function_call: dict[str, Any] | None = None
    refusal: str | None = None
    audio: dict[str, Any] | None = None
    reasoning: str | None = None
    reasoning_content: str | None = None


class ChatCompletionRequest(SamplingRequest):
    unsupported: ClassVar[dict[str, str]] = {
        **ENGINE_CONTROL,
        "functions": "the legacy `functions` API is not supported: use `tools`",
        "function_call": "the legacy `function_call` is not supported: use `tool_choice`",
        "audio": "audio output is not supported by the served models",
        "web_search_options": "web search is not available on this gateway: use `rag` with a collection",
    }
    token_fields: ClassVar[tuple[str, ...]] = ("max_tokens", "max_completion_tokens")

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    modalities: list[Literal["text"]] | None = None
    """Only text output is served."""
    prediction: dict[str, Any] | None = None
    """Accepted, no effect (predicted outputs are an OpenAI latency optimisation)."""
    verbosity: Literal["low", "medium", "high"] | None = None
    """Accepted, no effect."""
    # vLLM chat extensions
    include_reasoning: bool | None = None
    echo: bool | None = None
    add_generation_prompt: bool | None = None
    continue_final_message: bool | None = None
    documents: list[dict[str, str]] | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    mm_processor_kwargs: dict[str, Any] | None = None
    # ragswap
    rag: RagOptions | None = None
    """ragswap extension (``extra_body={"rag": {...}}``): ground the answer in a retrieval collection."""

    @model_validator(mode="after")
    def _check_chat(self) -> Self:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs: requires logprobs to be true")
        return self

    def message_dicts(self) -> list[dict[str, Any]]:
        return [m.model_dump(exclude_none=True) for m in self.messages]


class ChatChoice(CompletionChoice):
    message: dict[str, Any]
    """``role``, ``content``, ``tool_calls``...; ``citations`` when the answer was grounded (RAG)."""


class ChatCompletionResponse(CompletionResponseBase):
    object: Literal["chat.completion"]
    choices: list[ChatChoice]
