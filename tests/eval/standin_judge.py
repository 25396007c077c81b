"""The stand-in judge: a real tiny HTTP server that answers like a broken judge would.

It speaks OpenAI's chat-completions and ``/v1/models`` routes, but its answers are invalid JSON, valid JSON saying
"yes" to everything, valid JSON with random verdicts, or an HTTP error. It stands in for judges that misbehave
(which a real small model does only some of the time); everything else in the tests that use it (the openai
client, ragas's prompt and output classes, the budget, runner, calibration, summary and report) is the real code.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BROKEN = '{"statements": ["Paris is the capital", "verdict": 1,'
WORDS = [
    "river",
    "lamp",
    "orbit",
    "violin",
    "harbor",
    "maple",
    "copper",
    "lantern",
    "meadow",
    "glacier",
    "pepper",
    "comet",
]


def fake_instance(schema: dict[str, Any], node: dict[str, Any], rng: random.Random | None) -> Any:
    """A JSON value valid for ``node`` (a node of ``schema``): random with ``rng``, else "yes"/1 everywhere."""
    if "$ref" in node:
        return fake_instance(schema, schema["$defs"][node["$ref"].rsplit("/", 1)[-1]], rng)
    if "anyOf" in node:
        return fake_instance(schema, node["anyOf"][0], rng)
    if "enum" in node:
        options = list(node["enum"])
        return rng.choice(options) if rng else (1 if 1 in options else options[-1])
    kind = node.get("type")
    if kind == "object":
        return {name: fake_instance(schema, prop, rng) for name, prop in node.get("properties", {}).items()}
    if kind == "array":
        return [
            fake_instance(schema, node.get("items", {}), rng) for _ in range(max(1, node.get("minItems", 1)))
        ]
    if kind in ("integer", "number", "boolean"):
        return rng.choice([0, 1]) if rng else 1
    return " ".join(rng.choice(WORDS) for _ in range(3)) if rng else "yes"


class StandInJudge:
    """Stand-in judge endpoint (see the module docstring); ``mode`` is one of

    - ``broken-json``: every answer is :data:`BROKEN` (what small judges write without structured output);
    - ``always-yes``: valid JSON for the requested schema, every 0/1 verdict 1 and every string "yes";
    - ``random``: valid JSON, verdicts and words drawn at random (seeded by the prompt: reproducible);
    - ``status``: HTTP ``status`` with an OpenAI-shaped error body saying ``message``;
    - ``long-answer``: the ``always-yes`` answer, but one that needs ``answer_tokens`` output tokens: a request
      whose ``max_tokens`` is smaller gets it cut off there (half the JSON, ``finish_reason: "length"``).

    ``max_model_len`` is what its ``/v1/models`` reports (``None``: the route answers 404); ``prompt_tokens`` is
    the ``usage.prompt_tokens`` it reports. Every request body is kept in ``bodies``.
    """

    def __init__(
        self,
        mode: str = "broken-json",
        *,
        status: int = 400,
        message: str = "bad request",
        max_model_len: int | None = None,
        model: str = "stand-in-judge",
        answer_tokens: int = 0,
        prompt_tokens: int = 1,
    ) -> None:
        self.mode, self.status, self.message = mode, status, message
        self.answer_tokens, self.prompt_tokens = answer_tokens, prompt_tokens
        self.max_model_len, self.model = max_model_len, model
        self.bodies: list[dict[str, Any]] = []
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, code: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models") and judge.max_model_len is not None:
                    card = {"id": judge.model, "object": "model", "max_model_len": judge.max_model_len}
                    self._send(200, {"object": "list", "data": [card]})
                else:
                    self._send(404, {"error": {"message": "not found", "type": "not_found", "param": None}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                judge.bodies.append(body)
                if judge.mode == "status":
                    error = {
                        "message": judge.message,
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                    self._send(judge.status, {"error": error})
                    return
                self._send(200, judge.completion(body))

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def content(self, body: dict[str, Any]) -> str:
        if self.mode == "broken-json":
            return BROKEN
        schema = body.get("response_format", {}).get("json_schema", {}).get("schema") or {}
        prompt = body["messages"][-1]["content"]
        rng = random.Random(hashlib.sha256(prompt.encode()).digest()) if self.mode == "random" else None
        return json.dumps(fake_instance(schema, schema, rng))

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        content, finish = self.content(body), "stop"
        if self.mode == "long-answer" and body.get("max_tokens", 0) < self.answer_tokens:
            content, finish = content[: len(content) // 2], "length"
        return {
            "id": "chatcmpl-stand-in",
            "object": "chat.completion",
            "created": 0,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish,
                }
            ],
            "usage": {"prompt_tokens": self.prompt_tokens, "completion_tokens": 1, "total_tokens": 2},
        }

    def __enter__(self) -> StandInJudge:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
