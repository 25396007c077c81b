"""The gateway's OpenAPI document, describing what it really answers.

FastAPI's default document declares a 422 for every operation (the gateway answers validation errors with 400,
as OpenAI does) and none of the errors a handler raises. :func:`gateway_openapi` rewrites each operation's
responses from two sources:

- what the route's shape implies: an API key dependency can answer 401, the admin dependency 403, a JSON body
  400/413/415, query or path parameters 400, path parameters 404 (they name something);
- :data:`OPERATION_ERRORS`: what each operation's handler can raise besides (an unknown model, a name taken, no
  ready replica, ...), by route name, kept next to the error taxonomy so that the document and
  ``serving.errors`` change together.

Every error response refers to one ``ErrorResponse`` schema (OpenAI's ``{"error": {...}}``). The schema fuzz
test (``tests/serving/test_fuzz.py``) checks the running gateway against this document.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.utils import get_flat_dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel

from serving.errors import ErrorResponse

DESCRIPTIONS: dict[int, str] = {
    400: "Invalid request: a parameter (named in `error.param`) or the body is wrong",
    401: "Missing or invalid API key",
    403: "The key may not do this (admin scope needed, or a path outside the allowed roots)",
    404: "What the request names does not exist",
    409: "Conflicts with the current state (name taken, still in use, not finished)",
    413: "Request body larger than `server.max_request_bytes`",
    415: "Body not in a supported format (send `Content-Type: application/json`)",
    422: "Well-formed but not evaluable (a metadata filter)",
    502: "An engine replica failed while answering",
    503: "Not available right now (no ready engine replica, retrieval off): retry shortly",
}

HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    503: {"Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "string"}}},
}

#: Errors each operation's handler raises beyond what its shape implies (see the module docstring).
OPERATION_ERRORS: dict[str, tuple[int, ...]] = {
    "chat": (404, 422, 502, 503),
    "completions": (404, 502, 503),
    "create_adapter": (404, 409, 502, 503),
    "delete_adapter": (409,),
    "put_alias": (409, 503),
    "rollback_alias": (409, 503),
    "create_promotion": (409, 503),
    "create_collection": (409, 503),
    "list_collections": (503,),
    "describe_collection": (503,),
    "delete_collection": (503,),
    "add_documents": (400, 404, 413, 415, 503),
    "delete_document": (503,),
    "retrieve": (404, 422, 503),
    "create_evaluation": (403, 404, 503),
    "get_results": (409,),
    "cancel_evaluation": (409,),
    "delete_evaluation": (409,),
}


def inference_responses(body: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of an inference route: ``body`` as JSON, or server-sent events when ``stream`` is true."""
    return {
        200: {
            "model": body,
            "description": "The completion (JSON), or a stream of `data:` events ending in `data: [DONE]`",
            "content": {
                "text/event-stream": {
                    # Before OpenAPI 3.2 the schema of an event stream describes one event.
                    "schema": {
                        "type": "object",
                        "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
                        "required": ["data"],
                    }
                }
            },
        }
    }


def _implied_errors(route: APIRoute) -> set[int]:
    from serving.deps import require_admin, require_api_key

    flat = get_flat_dependant(route.dependant)
    calls = {dep.call for dep in flat.dependencies}
    statuses: set[int] = set()
    if require_api_key in calls:
        statuses.add(401)
    if require_admin in calls:
        statuses.add(403)
    if route.body_field is not None:
        statuses |= {400, 413, 415}
    if flat.query_params or flat.path_params:
        statuses.add(400)
    if flat.path_params:
        statuses.add(404)
    return statuses


def error_response_spec(status: int) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "description": DESCRIPTIONS[status],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
    }
    if status in HEADERS:
        spec["headers"] = HEADERS[status]
    return spec


def _add_examples(schema: dict[str, Any], base_model: str) -> None:
    """Working request examples for the inference operations, with the served base model's name (clients and
    fuzzers start from requests that reach the engine, not from random model names)."""
    examples = {
        "ChatCompletionRequest": {
            "model": base_model,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 8,
        },
        "CompletionRequest": {"model": base_model, "prompt": "The capital of France is", "max_tokens": 8},
    }
    components = schema["components"]["schemas"]
    for name, example in examples.items():
        if name in components:
            components[name]["examples"] = [example]
            components[name]["properties"]["model"]["examples"] = [base_model]


def gateway_openapi(app: FastAPI) -> dict[str, Any]:
    """The document FastAPI serves at ``/openapi.json``: built once, with honest error responses."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    error_schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(error_schema.pop("$defs", {}))
    components["ErrorResponse"] = error_schema
    _add_examples(schema, app.state.settings.models.base_model)
    for route in app.routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        statuses = _implied_errors(route) | set(OPERATION_ERRORS.get(route.name, ()))
        path = schema["paths"].get(route.path_format, {})
        for method in route.methods:
            operation = path.get(method.lower())
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status in sorted(statuses):
                responses.setdefault(str(status), error_response_spec(status))
    app.openapi_schema = schema
    return schema


def install_openapi(app: FastAPI) -> None:
    app.openapi = lambda: gateway_openapi(app)  # type: ignore[method-assign]
