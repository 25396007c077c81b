"""The LLM judge behind the RAGAS metrics: any OpenAI-compatible endpoint, JSON enforced by the server.

Why not ``ragas.llms.llm_factory``: for ``provider="openai"`` ragas 0.4.3 wraps the client with instructor in
``Mode.JSON`` (``response_format={"type": "json_object"}`` plus the schema pasted into the prompt,
``ragas/llms/base.py::_get_instructor_client``), with no way to ask for ``json_schema``. A 135M-parameter judge
then writes invalid or off-schema JSON for a large share of calls. :class:`JudgeLLM` implements ragas's own
``InstructorBaseRagasLLM`` interface (``agenerate(prompt, response_model)``), so the ragas metric classes, their
prompts and their score formulas are used unchanged, and only the transport differs: ``response_format`` of type
``json_schema`` built from the metric's pydantic output model (vLLM enforces it with guided decoding), bounded
list/string sizes so a looping small model cannot run past ``max_tokens``, retries with a little sampling
temperature, an on-disk cache, and a record of every raw output for the traces.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import re
from copy import deepcopy
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from ragas.llms.base import InstructorBaseRagasLLM

from eval.cache import JudgeCache, cache_key
from eval.records import JudgeCall

logger = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)

_calls: contextvars.ContextVar[list[JudgeCall] | None] = contextvars.ContextVar("judge_calls", default=None)

MAX_LIST_ITEMS = 8
MAX_STRING_CHARS = 200
# ragas declares these 0/1 verdicts as plain ``int`` (described as "0/1"); the schema sent to the judge says so.
BINARY_FIELDS = frozenset({"verdict", "attributed", "noncommittal"})


class JudgeError(RuntimeError):
    """The judge gave no usable answer after every retry; the message says why (parse error, HTTP error)."""


def record_calls() -> tuple[list[JudgeCall], contextvars.Token[list[JudgeCall] | None]]:
    """Collect the judge calls made by the current task (one metric on one sample) into a fresh list."""
    calls: list[JudgeCall] = []
    return calls, _calls.set(calls)


def stop_recording(token: contextvars.Token[list[JudgeCall] | None]) -> None:
    _calls.reset(token)


def bounded_schema(schema: dict[str, Any], max_items: int, max_chars: int) -> dict[str, Any]:
    """The output model's JSON schema with caps on arrays and strings (tighter, never looser, than pydantic's)."""
    out = deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for name, prop in (node.get("properties") or {}).items():
                if name in BINARY_FIELDS and isinstance(prop, dict) and prop.get("type") == "integer":
                    prop["enum"] = [0, 1]
            kind = node.get("type")
            if kind == "array" and "maxItems" not in node:
                node["maxItems"] = max_items
            if kind == "string" and "maxLength" not in node and "enum" not in node:
                node["maxLength"] = max_chars
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(out)
    return out


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def extract_json(text: str) -> str:
    """The JSON object in a model's answer: fenced block, else the outermost braces, else the text itself."""
    fenced = _FENCE.search(text)
    if fenced:
        return fenced.group(1).strip()
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        return text[start : end + 1]
    return text.strip()


class JudgeLLM(InstructorBaseRagasLLM):
    """ragas-compatible judge over an OpenAI-compatible chat endpoint.

    Example:
        >>> judge = JudgeLLM(AsyncOpenAI(base_url="http://127.0.0.1:8000/v1", api_key="x"), "smollm2-135m-instruct")
        >>> Faithfulness(llm=judge)
    """

    def __init__(
        self,
        client: Any,
        model: str,
        *,
        structured_output: bool = True,
        max_retries: int = 2,
        max_tokens: int = 512,
        temperature: float = 0.0,
        concurrency: int = 8,
        cache: JudgeCache | None = None,
        max_items: int = MAX_LIST_ITEMS,
        max_chars: int = MAX_STRING_CHARS,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.model = model
        self.structured_output = structured_output
        self.max_retries = max_retries
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.cache = cache
        self.max_items = max_items
        self.max_chars = max_chars
        self.extra_body = extra_body
        self._semaphore = asyncio.Semaphore(concurrency)
        self.calls = 0
        self.failures = 0
        """Calls that gave no valid output after every retry; of those, ``parse_failures`` returned unusable
        text (the rest are HTTP errors and timeouts)."""
        self.parse_failures = 0
        self.first_attempt_failures = 0

    def generate(self, prompt: str, response_model: type[T]) -> T:
        return asyncio.run(self.agenerate(prompt, response_model))

    def _request(self, prompt: str, schema_name: str, schema: dict[str, Any], attempt: int) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": self.max_tokens,
            # Greedy first; a retry samples a little so that it does not repeat the same broken output.
            "temperature": self.temperature if attempt == 0 else max(self.temperature, 0.3 * attempt),
            "seed": attempt,
        }
        if self.extra_body:
            kwargs["extra_body"] = self.extra_body
        if self.structured_output:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema_name, "schema": schema, "strict": True},
            }
        return kwargs

    async def agenerate(self, prompt: str, response_model: type[T]) -> T:
        """Ask the judge, parse into ``response_model``; raise :class:`JudgeError` once retries are spent."""
        schema_name = response_model.__name__
        schema = bounded_schema(response_model.model_json_schema(), self.max_items, self.max_chars)
        key = cache_key(
            model=self.model,
            prompt=prompt,
            schema=schema if self.structured_output else schema_name,
            structured=self.structured_output,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            extra=self.extra_body,
        )
        record = JudgeCall(
            schema_name=schema_name,
            prompt_sha=hashlib.sha256(prompt.encode()).hexdigest()[:16],
            attempts=0,
            ok=False,
        )
        recorder = _calls.get()
        if recorder is not None:
            recorder.append(record)
        self.calls += 1

        if self.cache is not None:
            cached = self.cache.get(key)
            if cached is not None:
                try:
                    parsed = response_model.model_validate_json(extract_json(cached))
                except ValidationError:
                    pass
                else:
                    record.cached, record.raw, record.ok = True, cached, True
                    return parsed

        error = "no attempt made"
        for attempt in range(self.max_retries + 1):
            record.attempts = attempt + 1
            try:
                async with self._semaphore:
                    response = await self.client.chat.completions.create(
                        **self._request(prompt, schema_name, schema, attempt)
                    )
                raw = response.choices[0].message.content or ""
                finish = response.choices[0].finish_reason
            except Exception as exc:  # the openai client raises many types; all mean "this attempt failed"
                error = f"judge request failed: {type(exc).__name__}: {exc}"
                record.raw = None
                if attempt == 0:
                    self.first_attempt_failures += 1
                continue
            record.raw = raw
            try:
                parsed = response_model.model_validate_json(extract_json(raw))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first.get("loc", ())) or "output"
                error = f"judge output is not a valid {schema_name} ({where}: {first.get('msg')})"
                if finish == "length":
                    error += f"; cut off at max_tokens={self.max_tokens}"
                if attempt == 0:
                    self.first_attempt_failures += 1
                continue
            record.ok, record.error = True, None
            if self.cache is not None:
                self.cache.set(key, raw)
            return parsed
        record.error = error
        self.failures += 1
        if error.startswith("judge output"):
            self.parse_failures += 1
        logger.debug("judge failed", extra={"schema": schema_name, "error": error})
        raise JudgeError(error)
