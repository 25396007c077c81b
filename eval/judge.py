"""The LLM judge behind the RAGAS metrics: any OpenAI-compatible endpoint, JSON enforced by the server.

Why not ``ragas.llms.llm_factory``: for ``provider="openai"`` ragas 0.4.3 wraps the client with instructor in
``Mode.JSON`` (``response_format={"type": "json_object"}`` plus the schema pasted into the prompt,
``ragas/llms/base.py::_get_instructor_client``), with no way to ask for ``json_schema``. A 135M-parameter judge
then writes invalid or off-schema JSON for a large share of calls. :class:`JudgeLLM` implements ragas's own
``InstructorBaseRagasLLM`` interface (``agenerate(prompt, response_model)``), so the ragas metric classes, their
prompts and their score formulas are used unchanged, and only the transport differs: ``response_format`` of type
``json_schema`` built from the metric's pydantic output model (vLLM enforces it with guided decoding), bounded
list/string sizes so a looping small model cannot run past ``max_tokens``, retries with a little sampling
temperature (and, after an answer cut off at ``max_tokens``, with the output room the judge's window has left),
an on-disk cache, and a record of every raw output for the traces.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import re
from copy import deepcopy
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError
from ragas.llms.base import InstructorBaseRagasLLM

from eval.budget import PromptBudget, make_counter, reported_window, resolve_window
from eval.cache import JudgeCache, cache_key
from eval.records import JudgeCall
from eval.settings import judge_default

if TYPE_CHECKING:
    from pathlib import Path

logger = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)

_calls: contextvars.ContextVar[list[JudgeCall] | None] = contextvars.ContextVar("judge_calls", default=None)

# ragas declares these 0/1 verdicts as plain ``int`` (described as "0/1"); the schema sent to the judge says so.
BINARY_FIELDS = frozenset({"verdict", "attributed", "noncommittal"})


JudgeErrorKind = Literal["parse", "request", "rejected", "context"]


class JudgeError(RuntimeError):
    """The judge gave no usable answer; the message says why and ``kind`` says which way it failed.

    ``parse``: outputs that never validated; ``request``: network errors, timeouts and 5xx/429 after every retry;
    ``rejected``: a deterministic 4xx (sent once, never retried); ``context``: the prompt does not fit the judge's
    context window (refused before sending, or a 4xx saying so).
    """

    def __init__(self, message: str, kind: JudgeErrorKind = "request") -> None:
        super().__init__(message)
        self.kind: JudgeErrorKind = kind


# A 4xx is the server's verdict on the request itself: resending it gives the same answer. These four are not.
TRANSIENT_4XX = frozenset({408, 409, 425, 429})
_CONTEXT_OVERFLOW = re.compile(
    r"maximum context length|context length|context window|too many (input )?tokens|prompt is too long|"
    r"exceeds .*max(imum)?_?(model)?_?len",
    re.IGNORECASE,
)


def is_context_overflow(message: str) -> bool:
    """Whether an endpoint's error message says the prompt is longer than the model's window."""
    return bool(_CONTEXT_OVERFLOW.search(message))


def record_calls() -> tuple[list[JudgeCall], contextvars.Token[list[JudgeCall] | None]]:
    """Collect the judge calls made by the current task (one metric on one sample) into a fresh list."""
    calls: list[JudgeCall] = []
    return calls, _calls.set(calls)


def stop_recording(token: contextvars.Token[list[JudgeCall] | None]) -> None:
    _calls.reset(token)


def bounded_schema(schema: dict[str, Any], max_items: int, max_chars: int) -> dict[str, Any]:
    """The output model's JSON schema with bounds on arrays (1..``max_items``) and strings (tighter, never looser,
    than pydantic's; bounds the model already declares are kept)."""
    out = deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for name, prop in (node.get("properties") or {}).items():
                if name in BINARY_FIELDS and isinstance(prop, dict) and prop.get("type") == "integer":
                    prop["enum"] = [0, 1]
            kind = node.get("type")
            if kind == "array":
                # At least one item: an empty list (no statements, no verdicts) only ever makes the metric NaN.
                node.setdefault("maxItems", max_items)
                node.setdefault("minItems", 1)
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
        max_retries: int = judge_default("judge_max_retries"),
        max_tokens: int = judge_default("judge_max_tokens"),
        temperature: float = judge_default("judge_temperature"),
        concurrency: int = judge_default("judge_concurrency"),
        cache: JudgeCache | None = None,
        max_items: int = judge_default("judge_max_items"),
        max_chars: int = judge_default("judge_max_chars"),
        extra_body: dict[str, Any] | None = None,
        context_tokens: int | None = None,
        tokenizer_dir: Path | None = None,
        chars_per_token: float = judge_default("judge_chars_per_token"),
        budget: PromptBudget | None = None,
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
        self.context_failures = 0
        """Calls that failed because the prompt did not fit the window (refused before sending, or a 4xx)."""
        self.rejected = 0
        """Calls answered with a deterministic 4xx (context overflows included): each was sent exactly once."""
        self.context_tokens = context_tokens
        """The judge's window from the settings; ``None`` = ask the endpoint's ``/v1/models``."""
        self.tokenizer_dir = tokenizer_dir
        self.chars_per_token = chars_per_token
        self.budget = budget
        """Set by :meth:`prepare`: the window, the output reservation and the token counter."""
        self._prepare_lock = asyncio.Lock()

    def counters(self) -> dict[str, int]:
        """The call counters, e.g. to report a run's calls without those of the judge check before it."""
        names = (
            "calls",
            "failures",
            "parse_failures",
            "first_attempt_failures",
            "context_failures",
            "rejected",
        )
        return {name: getattr(self, name) for name in names}

    async def prepare(self) -> PromptBudget:
        """Find the judge's window (setting, else ``/v1/models``) and load its tokenizer; once per judge."""
        if self.budget is not None:
            return self.budget
        async with self._prepare_lock:
            if self.budget is None:
                reported = await reported_window(self.client, self.model)
                window = resolve_window(self.context_tokens, reported)
                counter = await asyncio.to_thread(make_counter, self.tokenizer_dir, self.chars_per_token)
                self.budget = PromptBudget(window, self.max_tokens, counter)
                logger.info(
                    "judge context budget",
                    extra={
                        "model": self.model,
                        "window": window.tokens,
                        "source": window.source,
                        "prompt_limit": self.budget.prompt_limit,
                        "counter": counter.description,
                    },
                )
            return self.budget

    def generate(self, prompt: str, response_model: type[T]) -> T:
        return asyncio.run(self.agenerate(prompt, response_model))

    def _request(
        self, prompt: str, schema_name: str, schema: dict[str, Any], attempt: int, max_tokens: int
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            # Greedy first; a retry samples a little so that it does not repeat the same broken output.
            "temperature": self.temperature if attempt == 0 else max(self.temperature, 0.3 * attempt),
            "seed": attempt,
        }
        if attempt:
            # Guided JSON allows any whitespace between tokens, and a small judge can loop on newlines until
            # max_tokens; a retry penalises repeated tokens, which the schema's structure still overrides.
            kwargs["frequency_penalty"] = min(2.0, 0.5 * attempt)
        if self.extra_body:
            kwargs["extra_body"] = self.extra_body
        if self.structured_output:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": schema_name, "schema": schema, "strict": True},
            }
        return kwargs

    async def agenerate(self, prompt: str, response_model: type[T], *, note: str | None = None) -> T:
        """Ask the judge, parse into ``response_model``; raise :class:`JudgeError` when no usable answer came.

        A prompt longer than the budget is refused without a request; a deterministic 4xx is not retried;
        unparsable output, 5xx, 429, timeouts and connection errors are retried up to ``max_retries`` times.
        ``note`` (e.g. ``"passages 3-4 of 4"``) is kept in the call's trace record.
        """
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
            note=note,
        )
        recorder = _calls.get()
        if recorder is not None:
            recorder.append(record)
        self.calls += 1

        budget = await self.prepare()
        record.prompt_tokens = await asyncio.to_thread(budget.count, prompt)
        if record.prompt_tokens > budget.prompt_limit:
            error = f"judge prompt too long: {record.prompt_tokens} tokens, but {budget.describe()}"
            self._failed(record, error, "context")
            raise JudgeError(error, "context")

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
        kind: JudgeErrorKind = "request"
        max_tokens = self.max_tokens
        for attempt in range(self.max_retries + 1):
            record.attempts, record.max_tokens = attempt + 1, max_tokens
            try:
                async with self._semaphore:
                    response = await self.client.chat.completions.create(
                        **self._request(prompt, schema_name, schema, attempt, max_tokens)
                    )
                raw = response.choices[0].message.content or ""
                finish = response.choices[0].finish_reason
            except Exception as exc:  # the openai client raises many types; all mean "this attempt failed"
                record.raw = None
                if attempt == 0:
                    self.first_attempt_failures += 1
                status = getattr(exc, "status_code", None)
                if isinstance(status, int) and 400 <= status < 500 and status not in TRANSIENT_4XX:
                    # The same request gets the same answer: one attempt, and say what the server said.
                    message = _error_message(exc)
                    kind = "context" if is_context_overflow(message) else "rejected"
                    what = (
                        "prompt longer than the judge's window" if kind == "context" else "request rejected"
                    )
                    error = f"judge {what}: HTTP {status}: {message}"
                    self.rejected += 1
                    break
                error, kind = f"judge request failed: {type(exc).__name__}: {exc}", "request"
                continue
            usage = getattr(response, "usage", None)
            record.usage_prompt_tokens = getattr(usage, "prompt_tokens", None)
            record.raw = raw
            try:
                parsed = response_model.model_validate_json(extract_json(raw))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first.get("loc", ())) or "output"
                error, kind = (
                    f"judge output is not a valid {schema_name} ({where}: {first.get('msg')})",
                    "parse",
                )
                if finish == "length":
                    error += f"; cut off at max_tokens={max_tokens}"
                    max_tokens = _output_room(budget, record, max_tokens, cap=4 * self.max_tokens)
                if attempt == 0:
                    self.first_attempt_failures += 1
                continue
            record.ok, record.error = True, None
            if self.cache is not None:
                self.cache.set(key, raw)
            return parsed
        self._failed(record, error, kind)
        raise JudgeError(error, kind)

    def _failed(self, record: JudgeCall, error: str, kind: JudgeErrorKind) -> None:
        record.error, record.error_kind = error, kind
        self.failures += 1
        if kind == "parse":
            self.parse_failures += 1
        elif kind == "context":
            self.context_failures += 1
        logger.debug("judge failed", extra={"schema": record.schema_name, "error": error})


def _error_message(exc: Exception) -> str:
    """The ``error.message`` of an OpenAI-shaped error body, else the exception text (shortened)."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:500]
        if body.get("message"):
            return str(body["message"])[:500]
    return str(exc)[:500]


def _output_room(budget: PromptBudget, record: JudgeCall, max_tokens: int, *, cap: int) -> int:
    """The output limit for a retry after an answer was cut off at ``max_tokens``: what the judge's window leaves
    after this prompt (the endpoint's own count where it gave one), up to ``cap``; never less than before.

    The budget sized the prompt to leave ``max_tokens``, so a shorter prompt leaves more; a small judge whose
    characters cost a token each (escapes, symbols) can need it even within the schema's bounded strings.
    """
    prompt = record.usage_prompt_tokens or record.prompt_tokens or budget.prompt_limit
    return max(max_tokens, min(cap, budget.window.tokens - prompt - budget.margin_tokens))
