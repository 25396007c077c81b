"""The RAG hook contract of chat completions: options reach the augmenter (request's, else the alias's or
adapter's default collection), grounded messages reach the engine, citations come back (non-streaming on the
message, streaming as one chunk before [DONE]) in a form the official client accepts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from serving.chat.rag import RagAugmenter

pytestmark = pytest.mark.engine

BASE = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is the secret code word? Answer with the word."}]
CITATION = {"id": "doc-7", "title": "Vault manual", "text": "The secret code word is ZEBRA."}


class FixedPassageAugmenter:
    """Stand-in for the retrieval package's augmenter (tested elsewhere): one fixed passage, records calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[dict[str, Any]], dict[str, Any], str]] = []

    async def augment(
        self, messages: list[dict[str, Any]], options: dict[str, Any], model: str
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        self.calls.append((messages, options, model))
        system = {"role": "system", "content": f"Use this context: {CITATION['text']} Cite it as [1]."}
        return [system, *messages], [CITATION]


@pytest.fixture
def augmenter(gateway) -> Iterator[FixedPassageAugmenter]:
    aug = FixedPassageAugmenter()
    assert isinstance(aug, RagAugmenter)
    previous = gateway.app.state.rag_augmenter
    gateway.app.state.rag_augmenter = aug
    yield aug
    gateway.app.state.rag_augmenter = previous


@pytest.fixture(scope="module")
def client(gateway) -> OpenAI:
    return OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.api_key, max_retries=0, timeout=120)


def test_rag_without_augmenter_is_400(gateway, client: OpenAI) -> None:
    previous = gateway.app.state.rag_augmenter
    gateway.app.state.rag_augmenter = None  # a gateway without retrieval configured
    try:
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(
                model=BASE, messages=QUESTION, extra_body={"rag": {"collection": "docs"}}
            )
    finally:
        gateway.app.state.rag_augmenter = previous
    assert info.value.body["param"] == "rag"  # type: ignore[index]


def test_rag_non_stream_returns_citations(client: OpenAI, augmenter: FixedPassageAugmenter) -> None:
    reply = client.chat.completions.create(
        model=BASE,
        messages=QUESTION,
        temperature=0,
        max_tokens=24,
        extra_body={"rag": {"collection": "docs", "top_k": 3, "mode": "hybrid", "rerank": True}},
    )
    messages, options, model = augmenter.calls[-1]
    assert options == {"collection": "docs", "top_k": 3, "mode": "hybrid", "rerank": True}
    assert model == BASE and messages == QUESTION
    assert reply.choices[0].message.model_extra["citations"] == [CITATION]  # type: ignore[index]
    assert (
        "ZEBRA" in (reply.choices[0].message.content or "").upper()
    )  # the grounded prompt reached the engine


def test_rag_stream_sends_citations_chunk_before_usage_and_done(
    client: OpenAI, augmenter: FixedPassageAugmenter
) -> None:
    chunks = list(
        client.chat.completions.create(
            model=BASE,
            messages=QUESTION,
            temperature=0,
            max_tokens=24,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"rag": {"collection": "docs"}},
        )
    )
    # The citations chunk comes right before the usage chunk, which stays the last one (as OpenAI sends it).
    assert chunks[-2].model_extra["citations"] == [CITATION]  # type: ignore[index]
    assert chunks[-2].choices == [] and chunks[-2].usage is None
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert all("citations" not in (c.model_extra or {}) for c in chunks[:-2] + chunks[-1:])
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "ZEBRA" in text.upper()


def test_rag_options_validated(gateway, augmenter: FixedPassageAugmenter) -> None:
    body = {"model": BASE, "messages": QUESTION, "rag": {"collection": "docs", "top_k": 0}}
    resp = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=gateway.headers(), timeout=30)
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "rag.top_k"
    body["rag"] = {"top_k": 2}  # no collection and the base model has no default one
    resp = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=gateway.headers(), timeout=30)
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "rag.collection"
    assert augmenter.calls == []


def test_default_collection_of_adapter_and_alias(
    gateway, client: OpenAI, augmenter: FixedPassageAugmenter, lora_adapters
) -> None:
    admin = httpx.Client(base_url=gateway.url, headers=gateway.headers(admin=True), timeout=120)
    try:
        for collection in ("manuals", "faq"):  # a default collection must exist when it is bound
            resp = admin.post("/v1/collections", json={"name": collection})
            assert resp.status_code in (201, 409), resp.text
        resp = admin.post(
            "/v1/adapters",
            json={"name": "rag-alpha", "path": str(lora_adapters["alpha"]), "default_collection": "manuals"},
        )
        assert resp.status_code == 201, resp.text
        assert admin.put(
            "/v1/aliases/rag-live", json={"target": "rag-alpha@1", "default_collection": "faq"}
        ).is_success
        client.chat.completions.create(model="rag-alpha", messages=QUESTION, max_tokens=4)
        assert augmenter.calls[-1][1] == {"collection": "manuals"} and augmenter.calls[-1][2] == "rag-alpha"
        client.chat.completions.create(model="rag-live", messages=QUESTION, max_tokens=4)
        assert augmenter.calls[-1][1] == {"collection": "faq"}
        client.chat.completions.create(
            model="rag-live", messages=QUESTION, max_tokens=4, extra_body={"rag": {"top_k": 2}}
        )
        assert augmenter.calls[-1][1] == {"collection": "faq", "top_k": 2}
    finally:
        admin.delete("/v1/adapters/rag-alpha", params={"force": True})
        for collection in ("manuals", "faq"):
            admin.delete(f"/v1/collections/{collection}")
        admin.close()
