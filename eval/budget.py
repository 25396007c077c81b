"""The judge's context window: how many tokens a judge prompt may take, counted as the judge counts them.

A judge prompt (ragas's instruction, the output schema, few-shot examples, the question, reference and retrieved
passages) easily outgrows a small model's window: four passages of a few hundred words plus ragas's examples are
more than 2,048 tokens. Sending it anyway costs a request that fails deterministically (HTTP 400 "maximum context
length"). :class:`PromptBudget` knows the window (from the judge's ``/v1/models`` ``max_model_len`` or a
setting), reserves the output tokens, and counts prompts with the judge's own tokenizer and chat template when the
judge model is in the local model store, or with a conservative characters-per-token estimate otherwise. The
metric layer (:mod:`eval.metrics.judged`) uses it to trim few-shot examples and split passages across calls.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)

DEFAULT_CONTEXT_TOKENS = 2048
"""Window assumed when neither a setting nor the judge's ``/v1/models`` says (the smallest common one)."""
CHAT_OVERHEAD_TOKENS = 48
"""Estimated tokens of a chat template around one user message (system prompt, role markers) for estimates."""


class TokenCounter(Protocol):
    """Tokens of ``prompt`` sent as the single user message of a chat completion."""

    description: str

    def count(self, prompt: str) -> int: ...


class LocalTokenizerCounter:
    """Exact counts: the judge model's own tokenizer with its chat template (what vLLM will tokenize)."""

    def __init__(self, path: Path) -> None:
        from transformers import AutoTokenizer

        self.path = path
        self._tokenizer: Any = AutoTokenizer.from_pretrained(str(path))
        self._lock = threading.Lock()
        self.description = f"tokenizer of {path.name}"

    def count(self, prompt: str) -> int:
        messages = [{"role": "user", "content": prompt}]
        with self._lock:
            if getattr(self._tokenizer, "chat_template", None):
                encoded = self._tokenizer.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=True
                )
                ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
                return len(ids)
            return len(self._tokenizer(prompt)["input_ids"]) + CHAT_OVERHEAD_TOKENS


@dataclass
class CharEstimateCounter:
    """Estimated counts for a judge whose tokenizer is not local: characters / ``chars_per_token``, rounded up.

    The default of 2.5 characters per token is below what BPE tokenizers reach on English prose and JSON
    (3.2–4.5 for SmolLM2 on ragas's prompts), so an estimate over-counts and a budgeted prompt fits.
    """

    chars_per_token: float = 2.5
    description: str = field(init=False)

    def __post_init__(self) -> None:
        self.description = f"estimate ({self.chars_per_token:g} characters per token)"

    def count(self, prompt: str) -> int:
        return math.ceil(len(prompt) / self.chars_per_token) + CHAT_OVERHEAD_TOKENS


def local_tokenizer_dir(path: str | Path | None) -> Path | None:
    """``path`` if it is a local directory holding a Hugging Face tokenizer, else ``None``."""
    if path is None:
        return None
    folder = Path(path)
    if folder.is_dir() and any(
        (folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")
    ):
        return folder
    return None


_LOADING = threading.Lock()
_LOADED: dict[Path, LocalTokenizerCounter] = {}


def make_counter(tokenizer_dir: Path | None, chars_per_token: float) -> TokenCounter:
    """The exact counter when the judge's tokenizer is local and loads; the estimate otherwise.

    One tokenizer per folder and process, loaded under a lock: transformers' loading is not thread-safe (judges
    preparing at once in worker threads made all but one fall back to the estimate).
    """
    if tokenizer_dir is None:
        return CharEstimateCounter(chars_per_token)
    key = tokenizer_dir.resolve()
    with _LOADING:
        if key not in _LOADED:
            try:
                _LOADED[key] = LocalTokenizerCounter(tokenizer_dir)
            except Exception as exc:  # a broken or foreign tokenizer folder: estimate, do not fail the run
                logger.warning(
                    "judge tokenizer did not load; estimating prompt tokens",
                    extra={"path": str(tokenizer_dir), "error": f"{type(exc).__name__}: {exc}"},
                )
                return CharEstimateCounter(chars_per_token)
        return _LOADED[key]


@dataclass
class ContextWindow:
    """The judge's window in tokens and where that number came from (shown in summaries and reports)."""

    tokens: int
    source: str
    """``setting``, ``/v1/models``, ``setting < /v1/models`` (both known, the setting is smaller) or ``default``."""


def resolve_window(configured: int | None, reported: int | None) -> ContextWindow:
    """The smaller of the configured and the reported window; a default when neither is known."""
    if configured and reported:
        if configured <= reported:
            return ContextWindow(configured, "setting < /v1/models" if configured < reported else "setting")
        return ContextWindow(reported, "/v1/models")
    if configured:
        return ContextWindow(configured, "setting")
    if reported:
        return ContextWindow(reported, "/v1/models")
    return ContextWindow(DEFAULT_CONTEXT_TOKENS, "default")


async def reported_window(client: Any, model: str) -> int | None:
    """``max_model_len`` of ``model`` from the endpoint's ``/v1/models`` (vLLM and ragswap's gateway report it).

    Any failure (no such route, a hosted API that does not report it, the judge down) is ``None``: the caller
    falls back to the setting or the default, and the judge's own errors surface on the first real call.
    """
    try:
        page = await client.models.list()
    except Exception as exc:  # the openai client raises many types; all mean "not reported"
        logger.info("judge /v1/models not available", extra={"error": f"{type(exc).__name__}: {exc}"})
        return None
    for card in getattr(page, "data", []) or []:
        if getattr(card, "id", None) != model:
            continue
        extra = getattr(card, "model_extra", None) or {}
        value = getattr(card, "max_model_len", None) or extra.get("max_model_len")
        if isinstance(value, int) and value > 0:
            return value
    return None


class PromptTooLongError(ValueError):
    """Even the smallest form of a judge prompt does not fit the window; the message says what did not fit."""


@dataclass
class PromptBudget:
    """How many prompt tokens a judge call may use: the window less the reserved output tokens and a margin."""

    window: ContextWindow
    max_output_tokens: int
    counter: TokenCounter
    margin_tokens: int = 8
    _cache: OrderedDict[bytes, int] = field(default_factory=OrderedDict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def prompt_limit(self) -> int:
        """Largest prompt (in tokens, chat template included) that leaves room for ``max_output_tokens``."""
        return max(0, self.window.tokens - self.max_output_tokens - self.margin_tokens)

    def count(self, prompt: str) -> int:
        """Tokens of ``prompt`` (memoised: the planner and the judge count the same prompt)."""
        key = hashlib.blake2b(prompt.encode(), digest_size=16).digest()
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        tokens = self.counter.count(prompt)
        with self._lock:
            self._cache[key] = tokens
            if len(self._cache) > 4096:
                self._cache.popitem(last=False)
        return tokens

    def fits(self, prompt: str) -> bool:
        return self.count(prompt) <= self.prompt_limit

    def describe(self) -> str:
        """E.g. ``window 2048 tokens (/v1/models) − 512 output tokens``, for failure reasons."""
        return (
            f"the judge's window of {self.window.tokens} tokens ({self.window.source}) less "
            f"max_tokens={self.max_output_tokens} leaves {self.prompt_limit} prompt tokens"
        )


_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\n+")


def _units(text: str) -> Iterator[str]:
    """Sentences (or lines) of ``text``; the splitter falls back to words for a sentence that is too long."""
    for part in _SENTENCE_END.split(text):
        if part.strip():
            yield part.strip()


def split_to_fit(text: str, fits: Callable[[str], bool]) -> list[str]:
    """Cut ``text`` into consecutive pieces, each as long as ``fits`` allows, at sentence (else word) borders.

    Raises:
        PromptTooLongError: when a single word does not fit (the rest of the prompt leaves no room at all).
    """
    pieces: list[str] = []
    current = ""
    for sentence in _units(text):
        candidate = f"{current} {sentence}".strip()
        if fits(candidate):
            current = candidate
            continue
        if current:
            pieces.append(current)
            current = ""
        if fits(sentence):
            current = sentence
            continue
        for word in sentence.split():
            candidate = f"{current} {word}".strip()
            if fits(candidate):
                current = candidate
                continue
            if not current:
                raise PromptTooLongError(
                    "not even one word of the passage fits beside the rest of the prompt"
                )
            pieces.append(current)
            current = word
            if not fits(current):
                raise PromptTooLongError(
                    "not even one word of the passage fits beside the rest of the prompt"
                )
    if current:
        pieces.append(current)
    return pieces


def pack(contexts: list[str], fits: Callable[[list[str]], bool]) -> list[list[str]]:
    """Group ``contexts`` in order into as few batches as ``fits`` allows; a passage too long on its own is split.

    ``fits(batch)`` says whether the prompt built from ``batch`` fits the budget. A batch never reorders
    passages, so the first batch holds the highest-ranked ones.
    """
    if fits(contexts):
        return [list(contexts)]
    batches: list[list[str]] = []
    current: list[str] = []
    for context in contexts:
        if fits([*current, context]):
            current.append(context)
            continue
        if current:
            batches.append(current)
            current = []
        if fits([context]):
            current = [context]
            continue
        pieces = split_to_fit(context, lambda piece: fits([piece]))
        batches.extend([piece] for piece in pieces[:-1])
        current = [pieces[-1]]
    if current:
        batches.append(current)
    return batches
