"""Every way a request can fail is answered in OpenAI's error shape with the right 4xx, an ``x-request-id``, the
access log's status and the error metric, and the OpenAPI document says so. Each test pins one defect a schema
fuzzer (schemathesis) found against the running gateway.

The gateway runs over a stand-in engine (``tests/serving/stand_in_engine.py``): what is under test is the
gateway's handling of requests, not generation. Real generations are covered by ``test_gateway.py``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from serving.engine import EngineSettings
from tests.conftest import Gateway, gateway_settings, start_gateway
from tests.serving.stand_in_engine import BASE, StandInEngine

CHAT = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def gw(stand_in_engine: StandInEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("err-adapters")
    extra_key = "sk-test-short-0123456789"
    settings = gateway_settings(
        stand_in_engine.url,
        EngineSettings(),
        root,
        tmp_path_factory.mktemp("err-state"),
        api_keys=["sk-test-user-0123456789", extra_key],
        default_max_tokens=64,
        max_tokens_limit=512,
        key_limits=[{"key": extra_key, "max_tokens_limit": 16}],
    )
    gateway = start_gateway(settings, root)
    yield gateway
    gateway.server.stop()


@pytest.fixture(scope="module")
def http(gw: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, headers=gw.headers(admin=True), timeout=60) as client:
        yield client


def assert_error(
    resp: httpx.Response, status: int, code: str | None = None, param: Any = ...
) -> dict[str, Any]:
    """OpenAI's shape, the status, a request id; optionally the code and the param."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.headers.get("x-request-id")
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code, error
    if param is not ...:
        assert error["param"] == param, error
    return error


def logged(caplog: pytest.LogCaptureFixture, request_id: str) -> list[logging.LogRecord]:
    """The records of one request; the access line is written just after the response went out, so wait for it."""
    deadline = time.monotonic() + 5
    while True:
        records = [r for r in caplog.records if getattr(r, "request_id", None) == request_id]
        if any(r.name == "serving.access" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.02)


def errors_metric(http: httpx.Client, endpoint: str, status: int) -> float:
    prefix = f'ragswap_request_errors_total{{endpoint="{endpoint}",model="",status="{status}"}} '
    lines = [line for line in http.get("/metrics").text.splitlines() if line.startswith(prefix)]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


# ---- route level -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["DELETE", "PUT", "PATCH", "TRACE", "OPTIONS", "POST"])
def test_undeclared_method_is_405_with_allow(gw: Gateway, method: str) -> None:
    """Was: 500 with a traceback, no key needed (the handler asserted FastAPI's HTTPException subclass)."""
    resp = httpx.request(method, f"{gw.url}/health", timeout=10)
    assert_error(resp, 405, "method_not_allowed")
    assert resp.headers["allow"] == "GET"


def test_allow_lists_every_route_of_a_path(http: httpx.Client) -> None:
    resp = http.request("PATCH", "/v1/adapters/some-adapter")
    assert_error(resp, 405, "method_not_allowed")
    assert resp.headers["allow"] == "DELETE, GET"


def test_unknown_path_is_404_logged_and_counted(
    gw: Gateway, http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    before = errors_metric(http, "unmatched", 404)
    with caplog.at_level(logging.INFO, logger="serving.access"):
        resp = httpx.get(f"{gw.url}/nope", headers={"x-request-id": "req-nope-1"}, timeout=10)
        (record,) = logged(caplog, "req-nope-1")
    assert_error(resp, 404, "unknown_url")
    assert resp.headers["x-request-id"] == "req-nope-1"
    assert record.status == 404  # type: ignore[attr-defined]
    assert errors_metric(http, "unmatched", 404) == before + 1


def test_unexpected_exception_is_a_counted_500_in_shape(
    gw: Gateway, http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug still answers OpenAI's shape with a request id, is logged with its traceback and counted."""

    async def boom() -> None:
        raise RuntimeError("a bug")

    gw.app.router.add_api_route(  # type: ignore[attr-defined]
        "/test-only/boom", boom, methods=["GET"], name="boom", include_in_schema=False
    )
    before = errors_metric(http, "boom", 500)
    with caplog.at_level(logging.INFO):
        resp = http.get("/test-only/boom")
        records = logged(caplog, resp.headers["x-request-id"])
    error = assert_error(resp, 500, "internal_error")
    assert "a bug" not in error["message"] and "Traceback" not in resp.text
    assert any(r.exc_info and "a bug" in str(r.exc_info[1]) for r in records)
    assert any(getattr(r, "status", None) == 500 for r in records)  # the access log has the real status
    assert errors_metric(http, "boom", 500) == before + 1


# ---- parse level -----------------------------------------------------------------------------------------------


def test_non_utf8_json_is_400(http: httpx.Client) -> None:
    resp = http.post(
        "/v1/chat/completions",
        content=b'{"model": "\xff\xfe"}',
        headers={"content-type": "application/json"},
    )
    assert_error(resp, 400, "invalid_json", param=None)


def test_invalid_json_names_no_bogus_param(http: httpx.Client) -> None:
    """Was: ``param: "1"`` (the parser's character position)."""
    resp = http.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    error = assert_error(resp, 400, "invalid_json", param=None)
    assert "position 1" in error["message"]


def test_wrong_content_type_is_415(http: httpx.Client) -> None:
    body = json.dumps({"model": BASE, "messages": CHAT}).encode()
    resp = http.post("/v1/chat/completions", content=body, headers={"content-type": "text/plain"})
    assert_error(resp, 415, "unsupported_media_type")


def test_missing_body_and_missing_field(http: httpx.Client) -> None:
    """Was: ``Field required`` with ``param: null``."""
    assert_error(http.post("/v1/chat/completions"), 400, "missing_body", param=None)
    error = assert_error(
        http.post("/v1/chat/completions", json={"model": BASE}), 400, "missing_required_parameter", "messages"
    )
    assert error["message"] == "messages: Field required"


def test_multipart_without_boundary_is_400(http: httpx.Client) -> None:
    resp = http.post(
        "/v1/collections/kb/documents", content=b"--x--", headers={"content-type": "multipart/form-data"}
    )
    assert_error(resp, 400)


# ---- request bodies --------------------------------------------------------------------------------------------


def test_misspelt_field_is_400_naming_it(http: httpx.Client) -> None:
    """Was: accepted and ignored (docs/serving.md said 400)."""
    resp = http.post("/v1/chat/completions", json={"model": BASE, "messages": CHAT, "temprature": 0.2})
    error = assert_error(resp, 400, "unknown_parameter", "temprature")
    assert "did you mean `temperature`" in error["message"]
    nested = http.post(
        "/v1/chat/completions", json={"model": BASE, "messages": [{"role": "user", "contnet": "x"}]}
    )
    assert_error(nested, 400, "unknown_parameter", "messages.0.contnet")
    rag = http.post(
        "/v1/chat/completions", json={"model": BASE, "messages": CHAT, "rag": {"colection": "kb"}}
    )
    assert_error(rag, 400, "unknown_parameter", "rag.colection")


def test_engine_control_fields_are_refused_with_a_reason(http: httpx.Client) -> None:
    resp = http.post(
        "/v1/chat/completions", json={"model": BASE, "messages": CHAT, "chat_template": "{{ messages }}"}
    )
    error = assert_error(resp, 400, "unsupported_parameter", "chat_template")
    assert "template" in error["message"]
    legacy = http.post("/v1/chat/completions", json={"model": BASE, "messages": CHAT, "functions": []})
    assert "use `tools`" in assert_error(legacy, 400, "unsupported_parameter", "functions")["message"]


def test_types_are_strict(http: httpx.Client) -> None:
    resp = http.post("/v1/chat/completions", json={"model": BASE, "messages": CHAT, "stream": "yes"})
    assert_error(resp, 400, "invalid_value", "stream")
    resp = http.post("/v1/chat/completions", json={"model": BASE, "messages": CHAT, "logprobs": 0})
    assert_error(resp, 400, "invalid_value", "logprobs")


def test_openai_and_vllm_parameters_are_forwarded(http: httpx.Client, stand_in_engine: StandInEngine) -> None:
    """OpenAI's documented parameters and vLLM's sampling extensions pass; no-effect OpenAI fields are accepted
    and not forwarded."""
    body = {
        "model": BASE,
        "messages": CHAT,
        "temperature": 0,
        "top_k": 5,
        "min_p": 0.1,
        "repetition_penalty": 1.1,
        "ignore_eos": True,
        "structured_outputs": {"choice": ["yes", "no"]},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "parallel_tool_calls": False,
        "logprobs": True,
        "top_logprobs": 2,
        "store": False,
        "metadata": {"team": "search"},
        "service_tier": "auto",
        "user": "u-1",
    }
    resp = http.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    sent = stand_in_engine.bodies[-1]
    for name in ("top_k", "min_p", "repetition_penalty", "ignore_eos", "structured_outputs", "tools", "user"):
        assert sent[name] == body[name]
    assert not {"store", "metadata", "service_tier"} & set(sent)


def test_token_limits(http: httpx.Client, gw: Gateway, stand_in_engine: StandInEngine) -> None:
    """A request without max_tokens gets the default; above the limit is a 400 naming the field; a key can have
    its own limit."""
    assert http.post("/v1/chat/completions", json={"model": BASE, "messages": CHAT}).status_code == 200
    assert stand_in_engine.bodies[-1]["max_tokens"] == 64
    body = {"model": BASE, "messages": CHAT, "max_completion_tokens": 600}
    assert_error(
        http.post("/v1/chat/completions", json=body), 400, "max_tokens_too_large", "max_completion_tokens"
    )
    short = {"Authorization": "Bearer sk-test-short-0123456789"}
    resp = httpx.post(
        f"{gw.url}/v1/completions", json={"model": BASE, "prompt": "x", "max_tokens": 32}, headers=short
    )
    assert_error(resp, 400, "max_tokens_too_large", "max_tokens")
    resp = httpx.post(f"{gw.url}/v1/completions", json={"model": BASE, "prompt": "x"}, headers=short)
    assert resp.status_code == 200 and stand_in_engine.bodies[-1]["max_tokens"] == 16


# ---- references to nothing -------------------------------------------------------------------------------------


def test_default_collection_must_exist(http: httpx.Client) -> None:
    resp = http.post(
        "/v1/adapters", json={"name": "ghostly", "path": "x", "default_collection": "no-such-kb"}
    )
    assert_error(resp, 404, "collection_not_found", "default_collection")
    resp = http.put("/v1/aliases/ghost", json={"target": "x@1", "default_collection": "no-such-kb"})
    assert_error(resp, 404, "collection_not_found", "default_collection")


def test_evaluation_references_must_exist(http: httpx.Client) -> None:
    rows = [{"question": "q?"}]
    resp = http.post("/v1/evaluations", json={"dataset": rows, "adapters": [BASE, "ghost"]})
    assert_error(resp, 404, "model_not_found", "adapters.1")
    resp = http.post("/v1/evaluations", json={"dataset": rows, "collection": "no-such-kb"})
    assert_error(resp, 404, "collection_not_found", "collection")
    resp = http.post("/v1/evaluations", json={"dataset": rows, "judge": {"model": "ghost"}})
    assert_error(resp, 404, "model_not_found", "judge.model")
    resp = http.post("/v1/evaluations", json={"dataset": rows, "metrics": ["rouge_l", "bleu"]})
    error = assert_error(resp, 400, "invalid_value", "metrics.1")
    assert (
        "'bleu'" in error["message"] and "rouge_l" in error["message"] and "pydantic" not in error["message"]
    )
    assert http.get("/v1/evaluations").json()["data"] == []


@pytest.mark.parametrize("model", ["/etc/passwd", "no-such-model", "EMPTY_DIR"])
def test_embedding_model_that_does_not_load_is_400(http: httpx.Client, tmp_path: Path, model: str) -> None:
    """Was: 500 (``NotADirectoryError``, a hub lookup offline, ``Unrecognized model``)."""
    name = model.replace("/", "").replace("EMPTY_DIR", "empty")[:20] + "-kb"
    model = str(tmp_path) if model == "EMPTY_DIR" else model
    resp = http.post("/v1/collections", json={"name": name, "embedding_model": model})
    assert_error(resp, 400, param="embedding_model")
    assert http.get(f"/v1/collections/{name}").status_code == 404  # nothing was created


@pytest.mark.parametrize("key", ["L\\uda17\\udf78c<", "a..b", "trailing.", "x" * 129])
def test_payload_index_key_the_engine_cannot_index_is_400(http: httpx.Client, key: str) -> None:
    """Was: 500 (Qdrant Edge: ``invalid JSON path meta.…``), found by the schema fuzzer. ``key`` is JSON text."""
    body = '{"name": "keyed-kb", "payload_indexes": {"' + key + '": "bool"}}'
    resp = http.post("/v1/collections", content=body, headers={"content-type": "application/json"})
    error = assert_error(resp, 400)
    assert str(error["param"]).startswith("payload_indexes"), error
    assert http.get("/v1/collections/keyed-kb").status_code == 404  # nothing was created


def test_adapter_path_with_a_too_long_name_is_400(http: httpx.Client) -> None:
    """Was: 500 (``ENAMETOOLONG``)."""
    resp = http.post("/v1/adapters", json={"name": "long", "path": "a" * 300})
    assert_error(resp, 400, "invalid_path", "path")


# ---- operations and the OpenAPI document -----------------------------------------------------------------------


def test_ready_without_a_key_shows_no_internals(gw: Gateway, http: httpx.Client) -> None:
    resp = httpx.get(f"{gw.url}/ready", timeout=10)
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ready" and body["ready_replicas"] == 1
    assert body["replicas"] == [{"replica": 0, "state": "ready", "ready": True}]
    assert gw.settings.engine.urls[0] not in resp.text
    assert http.get("/v1/replicas").json()["data"][0]["url"] == gw.settings.engine.urls[0]


def test_openapi_declares_what_the_gateway_answers(gw: Gateway) -> None:
    spec = httpx.get(f"{gw.url}/openapi.json", timeout=10).json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            if "422" in responses:  # only retrieval's metadata filters answer 422
                assert (method, path) in {("post", "/v1/retrieve"), ("post", "/v1/chat/completions")}
            for status, response in responses.items():
                if status.startswith(("4", "5")) and path != "/ready":
                    assert response["content"]["application/json"]["schema"] == error_ref, (method, path)
            if path not in {"/health", "/ready", "/load", "/metrics", "/openapi.json"}:
                assert "401" in responses, (method, path)
    chat = spec["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert {"400", "401", "404", "413", "415", "502", "503"} <= set(chat)
    assert "text/event-stream" in chat["200"]["content"]
    assert {"403", "409"} <= set(spec["paths"]["/v1/adapters"]["post"]["responses"])
    assert chat["503"]["headers"]["Retry-After"]


def test_rag_usage_chunk_stays_last(gw: Gateway, http: httpx.Client) -> None:
    """Was: the citations chunk came after the usage chunk (OpenAI sends usage last, before ``[DONE]``)."""

    class OnePassage:
        async def augment(
            self, messages: list[dict[str, Any]], options: dict[str, Any], model: str
        ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            return messages, [{"id": "doc-1", "text": "passage"}]

    previous = gw.app.state.rag_augmenter  # type: ignore[attr-defined]
    gw.app.state.rag_augmenter = OnePassage()  # type: ignore[attr-defined]
    try:
        body = {
            "model": BASE,
            "messages": CHAT,
            "stream": True,
            "stream_options": {"include_usage": True},
            "rag": {"collection": "kb"},
        }
        with http.stream("POST", "/v1/chat/completions", json=body) as resp:
            events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    finally:
        gw.app.state.rag_augmenter = previous  # type: ignore[attr-defined]
    assert events[-1] == "[DONE]"
    *_, citations, usage = (json.loads(e) for e in events[:-1])
    assert citations["citations"] == [{"id": "doc-1", "text": "passage"}] and citations["choices"] == []
    assert usage["usage"]["completion_tokens"] == 2 and usage["choices"] == []


def test_manifest_fingerprint_decides_over_the_peft_base_name(
    lora_adapters, base_model_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Decision (docs/serving.md): an adapter whose manifest fingerprint matches the served model is accepted even
    when peft's ``base_model_name_or_path`` names another model (a path from the training machine, a hub id), and
    the disagreement is logged."""
    import shutil

    from serving.adapters.validation import validate_adapter

    adapter = tmp_path / "renamed"
    shutil.copytree(lora_adapters["alpha"], adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "meta-llama/Llama-3.1-8B"
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING, logger="serving.adapters.validation"):
        info = validate_adapter(adapter, base_model_path, max_rank=16)
    assert info.base_check == "manifest"
    (warning,) = [r for r in caplog.records if "another base model" in r.getMessage()]
    assert warning.declared_base == "meta-llama/Llama-3.1-8B"  # type: ignore[attr-defined]
    caplog.clear()
    validate_adapter(
        lora_adapters["alpha"], base_model_path, max_rank=16
    )  # its own path: same model, no warning
    assert not [r for r in caplog.records if "another base model" in r.getMessage()]
