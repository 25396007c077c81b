"""The gateway's request bodies against vLLM's own: every field the gateway forwards is one the pinned vLLM
declares, and every vLLM field is either forwarded, refused with a reason, or deliberately not offered. An engine
upgrade that adds, renames or drops a field fails here and asks for a decision."""

from __future__ import annotations

import pytest

from serving.chat.protocol import ChatCompletionRequest
from serving.completions.protocol import CompletionRequest
from serving.protocol import NO_EFFECT, SamplingRequest

#: vLLM fields the gateway does not offer (not OpenAI's, not sampling: tracing, internals, experimental).
NOT_OFFERED = frozenset(
    {
        "logprob_token_ids",
        "repetition_detection",
        "return_mm_kwargs",
        "return_prompt_text",
        "return_token_offsets",
        "routed_experts_prompt_start",
        "session_id",
        "stream_interval",
        "thinking_token_budget",
        "watermarking",
    }
)
GATEWAY_ONLY = {"rag"}
"""ragswap's own fields, removed before the engine sees the request."""
NOT_FORWARDED = {"best_of"}
"""OpenAI fields the gateway checks and drops (completions: ``best_of`` equal to ``n``)."""


@pytest.fixture(scope="module")
def vllm_models() -> dict[type[SamplingRequest], set[str]]:
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest as VllmChat
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest as VllmCompletion

    return {
        ChatCompletionRequest: set(VllmChat.model_fields),
        CompletionRequest: set(VllmCompletion.model_fields),
    }


@pytest.mark.parametrize("ours", [ChatCompletionRequest, CompletionRequest])
def test_forwarded_fields_are_vllm_fields(ours: type[SamplingRequest], vllm_models) -> None:
    forwarded = set(ours.model_fields) - NO_EFFECT - GATEWAY_ONLY - NOT_FORWARDED
    assert forwarded - vllm_models[ours] == set()


@pytest.mark.parametrize("ours", [ChatCompletionRequest, CompletionRequest])
def test_every_vllm_field_is_decided(ours: type[SamplingRequest], vllm_models) -> None:
    undecided = vllm_models[ours] - set(ours.model_fields) - set(ours.unsupported) - NOT_OFFERED
    assert undecided == set(), (
        "new vLLM request fields: forward them, refuse them, or list them as not offered"
    )


def test_refused_fields_are_not_declared() -> None:
    for ours in (ChatCompletionRequest, CompletionRequest):
        assert not set(ours.unsupported) & set(ours.model_fields)
