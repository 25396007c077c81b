"""A stand-in for a vLLM OpenAI server, for tests of the gateway's own behaviour (not of vLLM's).

It speaks the few endpoints the gateway uses (``/v1/models``, LoRA load/unload, chat and text completions as JSON
or as a stream with a usage chunk), records every inference body it receives, can answer slowly or fail for chosen models, notices when its
client goes away (like vLLM's ``with_cancellation``), and can be stopped and started again on the same port (an
engine that dies and comes back). Tests that need real generations use the session's real vLLM engine instead.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tests.conftest import free_port

BASE = "smollm2-135m-instruct"


class StandInEngine:
    """``url`` while running; ``bodies`` holds what it was asked; ``delay_s`` slows non-stream answers."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bodies: list[dict[str, Any]] = []
        self.loras: set[str] = set()
        self.delay_s = 0.0
        self.failing: set[str] = set()
        """Models (base or LoRA names) answered with a 500, as an engine failing for one adapter would."""
        self.disconnects = 0
        """Non-stream requests whose client (the gateway) went away before the answer."""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            data = [{"id": BASE, "object": "model", "parent": None}]
            data += [{"id": name, "object": "model", "parent": BASE} for name in sorted(self.loras)]
            return {"object": "list", "data": data}

        @app.post("/v1/load_lora_adapter")
        async def load(body: dict[str, Any]) -> str:
            self.loras.add(body["lora_name"])
            return "ok"

        @app.post("/v1/unload_lora_adapter")
        async def unload(body: dict[str, Any]) -> str:
            self.loras.discard(body["lora_name"])
            return "ok"

        async def answer(body: dict[str, Any], request: Request, kind: str) -> Any:
            self.bodies.append(body)
            if body.get("model") in self.failing:
                return JSONResponse(
                    status_code=500, content={"error": {"message": "stand-in failure", "code": 500}}
                )
            usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
            if body.get("stream"):
                return StreamingResponse(self._events(body, kind, usage), media_type="text/event-stream")
            if self.delay_s and not await self._finished_before_disconnect(request):
                self.disconnects += 1
                return JSONResponse({})
            choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
            if kind == "chat.completion":
                choice["message"] = {"role": "assistant", "content": "Hello there"}
            else:
                choice["text"] = "Hello there"
            return {
                "id": "x1",
                "object": kind,
                "created": 1,
                "model": body["model"],
                "choices": [choice],
                "usage": usage,
            }

        @app.post("/v1/chat/completions", response_model=None)
        async def chat(body: dict[str, Any], request: Request) -> Any:
            return await answer(body, request, "chat.completion")

        @app.post("/v1/completions", response_model=None)
        async def completions(body: dict[str, Any], request: Request) -> Any:
            return await answer(body, request, "text_completion")

        return app

    async def _finished_before_disconnect(self, request: Request) -> bool:
        async def disconnected() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass

        sleeper = asyncio.ensure_future(asyncio.sleep(self.delay_s))
        watcher = asyncio.ensure_future(disconnected())
        done, pending = await asyncio.wait({sleeper, watcher}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return sleeper in done

    async def _events(self, body: dict[str, Any], kind: str, usage: dict[str, Any]) -> AsyncIterator[str]:
        meta = {"id": "x1", "object": f"{kind}.chunk", "created": 1, "model": body["model"]}
        for word in ("Hello", " there"):
            delta = {"delta": {"content": word}} if kind == "chat.completion" else {"text": word}
            yield f"data: {json.dumps({**meta, 'choices': [{'index': 0, **delta, 'finish_reason': None}]})}\n\n"
        if (body.get("stream_options") or {}).get("include_usage"):
            yield f"data: {json.dumps({**meta, 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"

    def start(self) -> StandInEngine:
        self._server = uvicorn.Server(
            uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_config=None, lifespan="off")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="stand-in-engine")
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("stand-in engine did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
        self._server = self._thread = None
