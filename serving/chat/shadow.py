"""Shadow traffic: a share of an alias's chat requests is also answered by a candidate version, whose answer the
user never sees; both answers go into a capture that ``ragswap eval run --score-only`` scores offline, paired.

An admin turns it on per alias (``PUT /v1/aliases/{alias}/shadow``); with no shadow set nothing is mirrored and
nothing is written. The candidate is asked *after* the user's answer is complete (so the mirrored request itself
waits for nothing), with the same grounded messages and sampling parameters, non-streaming, and at most
``server.shadow_max_in_flight`` at once per gateway: past that a request is not mirrored and counts as
``dropped``. The candidate's requests are counted under the ``shadow`` endpoint, never in the alias's
per-version counters that a promotion's soak compares.

Capture rows are evaluation rows (:mod:`eval.dataset`): ``question`` (the last user message), ``responses`` (the
served version's and the candidate's answer, by ``name@version``), ``retrieved_contexts`` / ``…_ids`` when the
answer was grounded, and ``capture`` (alias, time, both versions, both latencies, the full messages, whether the
user's request streamed, the candidate's error if it failed). One file per alias, version pair and gateway
process: ``<shadow_dir>/<alias>/<served>--<candidate>.<gateway>.jsonl``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.errors import GatewayError

if TYPE_CHECKING:
    from serving.adapters.registry import AdapterRegistry, Target
    from serving.ops.metrics import GatewayMetrics
    from serving.proxy import EngineProxy

logger = logging.getLogger(__name__)

ENDPOINT = "shadow"
"""The endpoint label of the candidate's requests in the gateway's metrics."""
STOP_WAIT_S = 10.0
"""How long a stopping gateway waits for mirrored requests to finish before it drops them."""


@dataclass(frozen=True)
class Served:
    """What the user got: the answer text (choice 0), how long it took, the contexts it was grounded on."""

    answer: str
    latency_s: float
    citations: list[dict[str, Any]] | None


@dataclass(frozen=True)
class Mirrored:
    """One request to mirror: the version that answered the user, the candidate, the engine body both get."""

    primary: Target
    candidate: Target
    body: dict[str, Any]
    messages: list[dict[str, Any]]
    """The (grounded) conversation, kept in the capture."""
    served: Served
    stream: bool


def _question(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # content parts: keep the text ones
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict)).strip()
            return str(content or "")
    return ""


def _answer(data: dict[str, Any]) -> str:
    choices = data.get("choices") or [{}]
    return str((choices[0].get("message") or {}).get("content") or "")


def _file_part(text: str) -> str:
    return "".join(c if c.isalnum() or c in "@._-" else "_" for c in text)


class ShadowMirror:
    """Picks the requests to mirror and runs the candidate's side in the background."""

    def __init__(
        self,
        proxy: EngineProxy,
        registry: AdapterRegistry,
        metrics: GatewayMetrics,
        directory: Path,
        max_in_flight: int,
        gateway: str,
        rng: random.Random | None = None,
    ) -> None:
        self.proxy = proxy
        self.registry = registry
        self.metrics = metrics
        self.directory = directory
        self.max_in_flight = max_in_flight
        self.gateway = _file_part(gateway.rsplit(":", 1)[-1])
        self._rng = rng or random.Random()
        self._tasks: set[asyncio.Task[None]] = set()

    def candidate(self, target: Target) -> Target | None:
        """The shadow candidate to mirror this request to, or none (no shadow, not drawn, or too busy)."""
        from serving.adapters.registry import Target

        if target.alias is None or target.adapter is None:
            return None
        record = self.registry.aliases().get(target.alias)
        shadow = record.shadow if record is not None else None
        if shadow is None or shadow.ref == target.adapter.ref:
            return None
        if self._rng.random() * 100 >= shadow.percent:
            return None
        version = self.registry.snapshot.get(shadow.ref)
        if version is None:
            return None
        if len(self._tasks) >= self.max_in_flight:
            self.metrics.shadow_requests.labels(target.alias, shadow.ref, "dropped").inc()
            return None
        return Target(shadow.ref, version, None, version.name)

    def mirror(self, request: Mirrored) -> None:
        """Ask the candidate the same (grounded) request in the background and capture both answers."""
        task = asyncio.create_task(self._run(request), name=f"ragswap-shadow-{request.candidate.canonical}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def capture_stream(
        self, events: AsyncIterator[str], on_done: Callable[[Served], None], started: float
    ) -> AsyncIterator[str]:
        """Relay ``events`` unchanged while collecting choice 0's text; ``on_done`` once the stream completed
        without an error (a client that disconnects, or a failed stream, is not mirrored)."""
        parts: list[str] = []
        citations: list[dict[str, Any]] | None = None
        failed = False
        try:
            async for event in events:
                yield event
                if not event.startswith("data: {"):
                    continue
                chunk = json.loads(event[len("data: ") :])
                if "error" in chunk:
                    failed = True
                if "citations" in chunk:
                    citations = chunk["citations"]
                for choice in chunk.get("choices") or []:
                    if choice.get("index", 0) == 0:
                        parts.append((choice.get("delta") or {}).get("content") or "")
        finally:  # a client that went away closes this generator: close the relay now, not when collected
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()
        if not failed:
            on_done(Served("".join(parts), time.perf_counter() - started, citations))

    async def _run(self, request: Mirrored) -> None:
        from serving.chat.service import PATH

        primary, candidate, served, messages = (
            request.primary,
            request.candidate,
            request.served,
            request.messages,
        )
        body = {k: v for k, v in request.body.items() if k not in ("stream", "stream_options", "model")}
        alias = primary.alias or primary.requested
        start = time.perf_counter()
        answer: str | None = None
        error: str | None = None
        try:
            answer = _answer(await self.proxy.complete(ENDPOINT, PATH, candidate, body))
        except GatewayError as exc:
            error = f"{exc.status_code}: {exc.message}"
        except Exception as exc:  # never raised: nobody awaits the task
            error = repr(exc)
        latency = time.perf_counter() - start
        responses = {primary.canonical: served.answer}
        if answer is not None:
            responses[candidate.canonical] = answer
        row: dict[str, Any] = {
            "id": f"shadow-{uuid.uuid4().hex[:16]}",
            "question": _question(messages) or "(no user message)",
            "responses": responses,
        }
        if served.citations:
            row["retrieved_contexts"] = [str(c.get("text", "")) for c in served.citations]
            row["retrieved_context_ids"] = [str(c.get("chunk_id", "")) for c in served.citations]
        row["capture"] = {
            "alias": alias,
            "at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "served": primary.canonical,
            "candidate": candidate.canonical,
            "latency_s": {
                primary.canonical: round(served.latency_s, 4),
                candidate.canonical: round(latency, 4),
            },
            "stream": request.stream,
            "messages": messages,
            "candidate_error": error,
        }
        path = (
            self.directory
            / _file_part(alias)
            / f"{_file_part(primary.canonical)}--{_file_part(candidate.canonical)}.{self.gateway}.jsonl"
        )
        try:
            await asyncio.to_thread(_append_line, path, json.dumps(row, ensure_ascii=False))
        except OSError:
            logger.exception("shadow capture not written", extra={"alias": alias, "path": str(path)})
            error = error or "capture not written"
        outcome = "failed" if error else "captured"
        self.metrics.shadow_requests.labels(alias, candidate.canonical, outcome).inc()
        if error:
            logger.warning(
                "shadow request failed",
                extra={"alias": alias, "candidate": candidate.canonical, "error": error},
            )

    async def stop(self) -> None:
        """Let mirrored requests finish (up to :data:`STOP_WAIT_S`), then drop the rest."""
        tasks = list(self._tasks)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=STOP_WAIT_S)
        for task in pending:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task


def _append_line(path: Path, line: str) -> None:
    """One ``write`` of one line in append mode: lines of concurrent writers never interleave."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(line + "\n")
