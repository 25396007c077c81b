"""The gateway speaks OpenAI's protocol: the official client works unchanged, errors have OpenAI's shape."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai import OpenAI

pytestmark = pytest.mark.engine

BASE = "smollm2-135m-instruct"
PARIS = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(gateway) -> OpenAI:
    return OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.api_key, max_retries=0, timeout=120)


def test_chat_non_stream(client: OpenAI) -> None:
    reply = client.chat.completions.create(model=BASE, messages=PARIS, temperature=0, max_tokens=16)
    assert "Paris" in (reply.choices[0].message.content or "")
    assert reply.model == BASE
    assert reply.usage is not None and reply.usage.completion_tokens > 0


def test_chat_stream_matches_non_stream_and_reports_usage(client: OpenAI) -> None:
    full = client.chat.completions.create(model=BASE, messages=PARIS, temperature=0, max_tokens=16)
    stream = client.chat.completions.create(
        model=BASE,
        messages=PARIS,
        temperature=0,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert all(c.model == BASE for c in chunks)
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert usage.completion_tokens == full.usage.completion_tokens  # type: ignore[union-attr]


def test_stream_without_include_usage_has_no_usage_chunk(client: OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(model=BASE, messages=PARIS, temperature=0, max_tokens=8, stream=True)
    )
    assert chunks and all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_completions(client: OpenAI) -> None:
    reply = client.completions.create(
        model=BASE, prompt="The capital of France is", temperature=0, max_tokens=8
    )
    assert "Paris" in reply.choices[0].text
    streamed = client.completions.create(
        model=BASE, prompt="The capital of France is", temperature=0, max_tokens=8, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == reply.choices[0].text


def test_models_lists_base(client: OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert BASE in models and models[BASE].model_extra["parent"] is None  # type: ignore[index]


def test_json_schema_response_format(client: OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    reply = client.chat.completions.create(
        model=BASE,
        messages=[{"role": "user", "content": "Give the capital of France as JSON with city and country."}],
        temperature=0,
        max_tokens=40,
        response_format={"type": "json_schema", "json_schema": {"name": "capital", "schema": schema}},
    )
    content = reply.choices[0].message.content or ""
    data = json.loads(content)
    assert set(data) == {"city", "country"}
    # engine.compact_json (on by default): no whitespace between JSON tokens, only inside the strings.
    assert content == json.dumps(data, separators=(",", ":"), ensure_ascii=False), content


def test_seed_makes_sampling_reproducible(client: OpenAI) -> None:
    def sample() -> str:
        reply = client.chat.completions.create(
            model=BASE, messages=PARIS, temperature=1.0, seed=1234, max_tokens=12
        )
        return reply.choices[0].message.content or ""

    assert sample() == sample()


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"temperature": 3.0}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 0}, "n"),
        ({"presence_penalty": -2.5}, "presence_penalty"),
        ({"frequency_penalty": 9}, "frequency_penalty"),
        ({"stop": [""]}, None),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
    ],
)
def test_bad_sampling_params_are_400(gateway, params: dict, param: str | None) -> None:
    body = {"model": BASE, "messages": PARIS, **params}
    resp = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=gateway.headers(), timeout=30)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    if param:
        assert error["param"] == param


def test_bad_params_through_openai_client(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=BASE, messages=PARIS, temperature=-1)
    assert info.value.body["param"] == "temperature"  # type: ignore[index]


def test_engine_rejection_stays_a_client_error(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):  # far beyond max_model_len: the engine says 400, so do we
        client.chat.completions.create(model=BASE, messages=PARIS, max_tokens=100_000)


def test_unknown_model_is_404_listing_models(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such-model", messages=PARIS)
    body = info.value.body
    assert body["param"] == "model" and body["code"] == "model_not_found"  # type: ignore[index]
    assert BASE in body["message"]  # type: ignore[index]


def test_auth(gateway) -> None:
    wrong = OpenAI(base_url=f"{gateway.url}/v1", api_key="sk-wrong-key-000000", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        wrong.chat.completions.create(model=BASE, messages=PARIS)
    assert info.value.body["code"] == "invalid_api_key"  # type: ignore[index]
    resp = httpx.get(f"{gateway.url}/v1/models", timeout=10)
    assert resp.status_code == 401 and resp.json()["error"]["type"] == "authentication_error"
    # A user key may not change adapters: 403.
    resp = httpx.post(
        f"{gateway.url}/v1/adapters", json={"name": "x", "path": "x"}, headers=gateway.headers(), timeout=10
    )
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "admin_required"


def test_payload_too_large_is_413(gateway) -> None:
    huge = "x" * (gateway.settings.server.max_request_bytes + 10)
    body = {"model": BASE, "messages": [{"role": "user", "content": huge}]}
    resp = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=gateway.headers(), timeout=30)
    assert resp.status_code == 413 and resp.json()["error"]["type"] == "invalid_request_error"


def test_invalid_json_is_400(gateway) -> None:
    resp = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=b"{not json",
        headers={**gateway.headers(), "content-type": "application/json"},
        timeout=10,
    )
    assert resp.status_code == 400 and "error" in resp.json()


def test_ops_endpoints(gateway, client: OpenAI) -> None:
    client.chat.completions.create(model=BASE, messages=PARIS, max_tokens=4)
    assert httpx.get(f"{gateway.url}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.url}/ready")
    assert ready.status_code == 200 and ready.json()["replicas"][0]["ready"] is True
    metrics = httpx.get(f"{gateway.url}/metrics").text
    assert f'ragswap_requests_total{{endpoint="chat",model="{BASE}",stream="false"}}' in metrics
    assert "ragswap_tokens_total" in metrics and "ragswap_time_to_first_token_seconds" in metrics
    assert "x-request-id" in httpx.get(f"{gateway.url}/health").headers


def test_replicas_endpoint_needs_a_key_and_lists_state(gateway) -> None:
    assert httpx.get(f"{gateway.url}/v1/replicas").status_code == 401
    resp = httpx.get(f"{gateway.url}/v1/replicas", headers=gateway.headers())
    assert resp.status_code == 200
    (replica,) = resp.json()["data"]
    assert replica["state"] == "ready" and replica["ready"] and replica["healthy"]
    assert replica["url"] == gateway.settings.engine.urls[0] and replica["embedded"] is False
    assert isinstance(replica["adapters"], list) and replica["restarts"] == 0


def test_vllm_extensions_and_structured_output_through_openai_client(client: OpenAI) -> None:
    """Unknown fields are refused, but vLLM's own sampling extensions and structured output still work."""
    reply = client.chat.completions.create(
        model=BASE,
        messages=PARIS,
        max_tokens=8,
        extra_body={
            "top_k": 1,
            "min_p": 0.0,
            "repetition_penalty": 1.0,
            "structured_outputs": {"choice": ["Paris", "London"]},
        },
    )
    assert reply.choices[0].message.content in {"Paris", "London"}  # the choice constraint reached vLLM
    # Tool calling needs vLLM's --tool-call-parser (engine.extra_args); the gateway forwards tools and vLLM's
    # verdict on them as it is.
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=BASE,
            messages=PARIS,
            tools=[
                {"type": "function", "function": {"name": "capital_of", "parameters": {"type": "object"}}}
            ],
            tool_choice={"type": "function", "function": {"name": "capital_of"}},
            max_tokens=8,
        )
    assert "tool-call-parser" in info.value.body["message"]  # type: ignore[index]


def test_langchain_chat_openai(gateway) -> None:
    """What LangChain's ChatOpenAI sends (invoke, stream, structured output) is accepted."""
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel

    class Capital(BaseModel):
        city: str

    llm = ChatOpenAI(
        base_url=f"{gateway.url}/v1",
        api_key=gateway.api_key,
        model=BASE,
        temperature=0,
        max_tokens=24,
        max_retries=0,
    )
    assert "Paris" in str(llm.invoke("What is the capital of France?").content)
    assert "Paris" in "".join(str(c.content) for c in llm.stream("What is the capital of France?"))
    structured = llm.with_structured_output(Capital, method="json_schema").invoke(
        "What is the capital of France? Answer as JSON with the key city."
    )
    assert isinstance(structured, Capital) and structured.city


def test_abandoned_non_stream_request_is_aborted_in_the_engine(gateway, engine) -> None:
    """Was: a client that went away left the engine generating every token of a non-streaming request."""
    import threading
    import time

    def running() -> float:
        lines = httpx.get(f"{engine.url}/metrics", timeout=10).text.splitlines()
        return sum(
            float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("vllm:num_requests_running")
        )

    body = {"model": BASE, "messages": PARIS, "max_tokens": 1500, "ignore_eos": True, "temperature": 0}
    outcome: list[BaseException] = []

    def abandon() -> None:  # ~1 minute of generation here; the client gives up after 4 s
        try:
            httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=gateway.headers(), timeout=4)
        except httpx.ReadTimeout as exc:
            outcome.append(exc)

    thread = threading.Thread(target=abandon)
    thread.start()
    deadline = time.monotonic() + 4
    while running() < 1:  # the request reached the engine
        assert time.monotonic() < deadline, "the request never ran on the engine"
        time.sleep(0.1)
    thread.join()
    assert outcome, "the request should have outlived the client's patience"
    deadline = time.monotonic() + 5
    while running() > 0:
        assert time.monotonic() < deadline, "the engine is still generating for a client that went away"
        time.sleep(0.2)
