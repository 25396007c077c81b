"""Training tests: the fact-learning recipe, trained once per session and shared by the tests that serve it."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

RECIPES = Path(__file__).resolve().parents[2] / "training" / "recipes"
# Facts in the session test (the benchmark uses all 50, docs/training.md); the recipe's settings otherwise.
N_FACTS = 25


def load_facts(n: int = N_FACTS) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in (RECIPES / "data" / "company_facts.jsonl").read_text().splitlines()]
    return [(r["instruction"], r["output"]) for r in rows[:n]]


def ask_all(client: Any, model: str, questions: list[str], max_tokens: int = 32) -> list[str]:
    """Greedy answers to all questions, sent concurrently so the engine batches them."""

    def one(question: str) -> str:
        resp = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": question}],
            temperature=0.0,
            max_tokens=max_tokens,
        )
        return str(resp.choices[0].message.content or "").strip()

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(one, questions))


def accuracy(answers: list[str], expected: list[str]) -> float:
    """Share of answers exactly equal to the trained answer (whitespace-trimmed)."""
    return sum(a.strip() == e.strip() for a, e in zip(answers, expected, strict=True)) / len(expected)


@pytest.fixture(scope="session")
def facts() -> list[tuple[str, str]]:
    return load_facts()


@pytest.fixture(scope="session")
def facts_adapter(tmp_path_factory: pytest.TempPathFactory, facts: list[tuple[str, str]]) -> Path:
    """A LoRA trained by the public recipe on the made-up company facts (``training/recipes/company_facts.yaml``)."""
    from ragswap import ModelSettings
    from training import load_config, train

    work = tmp_path_factory.mktemp("facts")
    data = work / "facts.jsonl"
    data.write_text("".join(json.dumps({"instruction": q, "output": a}) + "\n" for q, a in facts))
    config = load_config(RECIPES / "company_facts.yaml", output_dir=work / "company-facts")
    config.datasets[0].path = data
    result = train(config, models=ModelSettings(), progress=False)
    return result.output_dir
