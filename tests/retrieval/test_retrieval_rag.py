"""Retrieval-augmented chat through the real gateway and vLLM engine, with the official openai client."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from openai import OpenAI

FACTS = [
    {
        "id": "zorblax",
        "text": "The Zorblax reactor in Kestrel Valley produces 42 megawatts of electric power.",
        "metadata": {"topic": "energy"},
    },
    {
        "id": "penguins",
        "text": "Emperor penguins breed during the Antarctic winter and incubate eggs on their feet.",
        "metadata": {"topic": "biology"},
    },
    {
        "id": "erebus",
        "text": "Mount Erebus is the southernmost active volcano and has a persistent lava lake.",
        "metadata": {"topic": "geology"},
    },
]
QUESTION = "How many megawatts does the Zorblax reactor produce?"

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def rag_collection(gateway: Any) -> str:
    admin = gateway.headers(admin=True)
    with httpx.Client(base_url=gateway.url, timeout=120) as http:
        r = http.post("/v1/collections", json={"name": "ragfacts"}, headers=admin)
        assert r.status_code == 201, r.text
        r = http.post("/v1/collections/ragfacts/documents", json={"documents": FACTS}, headers=admin)
        assert r.status_code == 200, r.text
    return "ragfacts"


def _client(gateway: Any) -> OpenAI:
    return OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.api_key, max_retries=0, timeout=120)


def _model(client: OpenAI) -> str:
    return next(m.id for m in client.models.list().data if "smollm" in m.id.lower())


def _check_citations(citations: list[dict[str, Any]]) -> None:
    assert citations, "no citations"
    by_doc = {f["id"]: f["text"] for f in FACTS}
    first = citations[0]
    assert first["source"] == 1 and first["document_id"] == "zorblax"
    assert "42 megawatts" in first["text"]
    assert by_doc["zorblax"][first["start"] : first["end"]] == first["text"]
    assert all(c["document_id"] in by_doc and c["chunk_id"] for c in citations)


def test_rag_chat_cites_the_passage_with_the_answer(gateway: Any, rag_collection: str) -> None:
    client = _client(gateway)
    resp = client.chat.completions.create(
        model=_model(client),
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=32,
        temperature=0,
        extra_body={"rag": {"collection": rag_collection, "top_k": 2}},
    )
    message = resp.choices[0].message
    citations = (message.model_extra or {}).get("citations")
    assert isinstance(citations, list)
    _check_citations(citations)
    assert "42" in (message.content or "")  # the grounded prompt puts the answer in front of the model


def test_rag_streaming_ends_with_citations(gateway: Any, rag_collection: str) -> None:
    client = _client(gateway)
    stream = client.chat.completions.create(
        model=_model(client),
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=16,
        temperature=0,
        stream=True,
        extra_body={"rag": {"collection": rag_collection, "top_k": 2}},
    )
    found = [c.model_extra["citations"] for c in stream if c.model_extra and "citations" in c.model_extra]
    assert len(found) == 1
    _check_citations(found[0])


def test_rag_without_relevant_context_cites_nothing(gateway: Any, rag_collection: str) -> None:
    client = _client(gateway)
    resp = client.chat.completions.create(
        model=_model(client),
        messages=[{"role": "user", "content": "Who won the 1954 football world cup final?"}],
        max_tokens=24,
        temperature=0,
        extra_body={"rag": {"collection": rag_collection, "min_score": 0.5}},
    )
    assert (resp.choices[0].message.model_extra or {}).get("citations") == []


def test_rag_unknown_collection_is_404(gateway: Any) -> None:
    import openai

    client = _client(gateway)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model=_model(client),
            messages=[{"role": "user", "content": QUESTION}],
            max_tokens=8,
            extra_body={"rag": {"collection": "does-not-exist"}},
        )
