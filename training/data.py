"""Reading and checking training files, and turning each dataset type into TRL's dataset format.

Every sample becomes a *conversational* TRL row (``prompt``/``completion`` message lists, or
``prompt``/``chosen``/``rejected`` for DPO) so TRL renders it with the tokenizer's chat template and computes the
loss on the completion only. ``text`` rows stay plain text for packed continued pre-training.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragswap import sha256_file
from training.config import DatasetSpec, RecipeError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

Row = dict[str, Any]
Messages = list[dict[str, str]]

REQUIRED: dict[str, tuple[str, ...]] = {
    "alpaca": ("instruction", "output"),
    "prompt_completion": ("prompt", "completion"),
    "chat": ("messages",),
    "text": ("text",),
    "dpo": ("prompt", "chosen", "rejected"),
}


class DatasetError(RecipeError):
    """A training file cannot be used; every problem found is listed (file and line included)."""


@dataclass
class DatasetStats:
    """What went into a run, recorded in the adapter manifest."""

    files: list[dict[str, Any]] = field(default_factory=list)
    samples: int = 0
    overlength: int = 0
    """Samples longer than ``max_seq_length`` (dropped or truncated, per ``overlength``)."""
    dropped: int = 0
    truncated: int = 0
    train_samples: int = 0
    eval_samples: int = 0
    train_tokens: int = 0
    """Tokens of one pass over the training split (after dropping/truncation)."""

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def read_records(path: Path) -> list[Row]:
    """Objects of a ``.jsonl`` (one a line, blank lines skipped) or ``.json`` (a list) file.

    Raises:
        DatasetError: naming the file and the line of every malformed record.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError([f"{path}: cannot read: {exc}"]) from exc
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError([f"{path}:{exc.lineno}: invalid JSON: {exc.msg}"]) from exc
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise DatasetError([f"{path}: a .json dataset must be a list of objects"])
        return data
    rows, problems = [], []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{path}:{lineno}: malformed JSON line: {exc.msg} (column {exc.colno})")
            continue
        if not isinstance(row, dict):
            problems.append(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            continue
        rows.append(row)
    if problems:
        raise DatasetError(
            problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        )
    return rows


def _check_messages(value: Any) -> str | None:
    if not isinstance(value, list) or not value:
        return "messages must be a non-empty list"
    for msg in value:
        if not isinstance(msg, dict) or not isinstance(msg.get("content"), str):
            return "each message needs a string 'content'"
        if msg.get("role") not in ("system", "user", "assistant"):
            return f"message role {msg.get('role')!r} is not system/user/assistant"
    if value[-1]["role"] != "assistant":
        return "the last message must be the assistant's (it is what the model learns to say)"
    return None


def _to_trl(kind: str, row: Row, system: str | None) -> Row:
    head: Messages = [{"role": "system", "content": system}] if system else []
    if kind == "alpaca":
        user = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        return {"prompt": [*head, {"role": "user", "content": user}], "completion": _assistant(row["output"])}
    if kind == "prompt_completion":
        return {
            "prompt": [*head, {"role": "user", "content": row["prompt"]}],
            "completion": _assistant(row["completion"]),
        }
    if kind == "chat":
        messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        if system and messages[0]["role"] != "system":
            messages = head + messages
        return {"prompt": messages[:-1], "completion": messages[-1:]}
    if kind == "dpo":
        return {
            "prompt": [*head, {"role": "user", "content": row["prompt"]}],
            "chosen": _assistant(row["chosen"]),
            "rejected": _assistant(row["rejected"]),
        }
    return {"text": row["text"]}


def _assistant(content: str) -> Messages:
    return [{"role": "assistant", "content": content}]


def convert_rows(spec: DatasetSpec, rows: list[Row]) -> list[Row]:
    """TRL rows of one file; every record with a missing or mistyped field is reported (by record number)."""
    problems = []
    if not rows:
        raise DatasetError([f"{spec.path}: dataset is empty"])
    out = []
    for i, row in enumerate(rows, start=1):
        missing = [k for k in REQUIRED[spec.type] if k not in row]
        if missing:
            problems.append(f"{spec.path}: record {i}: missing field(s) {missing} for type {spec.type!r}")
            continue
        if spec.type == "chat":
            if reason := _check_messages(row["messages"]):
                problems.append(f"{spec.path}: record {i}: {reason}")
                continue
        else:
            bad = [k for k in (*REQUIRED[spec.type], "input") if k in row and not isinstance(row[k], str)]
            if bad:
                problems.append(f"{spec.path}: record {i}: field(s) {bad} must be strings")
                continue
            if any(not row[k].strip() for k in REQUIRED[spec.type] if k != "prompt"):
                problems.append(f"{spec.path}: record {i}: empty {REQUIRED[spec.type]} value")
                continue
        out.append(_to_trl(spec.type, row, spec.system_prompt))
    if problems:
        raise DatasetError(
            problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        )
    return out


def _token_length(row: Row, tokenizer: PreTrainedTokenizerBase) -> int:
    if "text" in row:
        return len(tokenizer(row["text"], add_special_tokens=False)["input_ids"])
    answers = [row["completion"]] if "completion" in row else [row["chosen"], row["rejected"]]
    texts = [str(tokenizer.apply_chat_template(row["prompt"] + a, tokenize=False)) for a in answers]
    return max(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)


@dataclass
class PreparedData:
    train: list[Row]
    eval: list[Row]
    stats: DatasetStats


def load_datasets(
    specs: list[DatasetSpec],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_seq_length: int,
    overlength: str,
    val_set_size: float,
    seed: int,
) -> PreparedData:
    """Read, check, convert and split all datasets of a recipe; problems of all files are reported together."""
    import random

    problems: list[str] = []
    stats = DatasetStats()
    rows: list[Row] = []
    for spec in specs:
        try:
            converted = convert_rows(spec, read_records(spec.path))
        except DatasetError as exc:
            problems.extend(exc.problems)
            continue
        stats.files.append(
            {
                "path": str(spec.path),
                "type": spec.type,
                "sha256": sha256_file(spec.path),
                "samples": len(converted),
            }
        )
        rows.extend(converted)
    if problems:
        raise DatasetError(problems)
    stats.samples = len(rows)
    kept, lengths = [], []
    packed = all(spec.type == "text" for spec in specs)
    for row in rows:
        n = _token_length(row, tokenizer)
        if n > max_seq_length and not packed:
            stats.overlength += 1
            if overlength == "drop":
                stats.dropped += 1
                continue
            stats.truncated += 1
            n = max_seq_length
        kept.append(row)
        lengths.append(n)
    if stats.overlength:
        logger.warning(
            "%d of %d samples exceed max_seq_length=%d: %s",
            stats.overlength,
            stats.samples,
            max_seq_length,
            "dropped" if overlength == "drop" else "truncated",
            extra={"overlength": stats.overlength, "action": overlength},
        )
    if not kept:
        raise DatasetError([f"no sample fits max_seq_length={max_seq_length} ({stats.dropped} dropped)"])
    order = list(range(len(kept)))
    random.Random(seed).shuffle(order)
    n_eval = round(len(kept) * val_set_size) if val_set_size > 0 else 0
    if val_set_size > 0 and (n_eval < 1 or n_eval >= len(kept)):
        raise DatasetError([f"val_set_size={val_set_size} leaves no eval or no train sample of {len(kept)}"])
    eval_idx = set(order[:n_eval])
    train = [kept[i] for i in order if i not in eval_idx]
    stats.train_samples, stats.eval_samples = len(train), n_eval
    stats.train_tokens = sum(lengths[i] for i in order if i not in eval_idx)
    return PreparedData(train=train, eval=[kept[i] for i in order[:n_eval]], stats=stats)
