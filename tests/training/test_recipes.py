"""Recipes and datasets: every problem reported at once, with file and line; QLoRA refuses to run without CUDA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragswap import ModelSettings
from ragswap.cli import app
from tests.training.conftest import RECIPES
from training import DatasetError, HardwareError, RecipeError, load_config, parse_config, train
from training.config import DatasetSpec
from training.data import convert_rows, load_datasets, read_records


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_all_recipe_problems_are_reported_together(tmp_path: Path) -> None:
    bad = {
        "adapter": "bogus",
        "lora_r": 0,
        "learning_rate": -1,
        "datasets": [{"path": "x.jsonl", "type": "sharegpt"}],
        "epochs_typo": 3,
    }
    with pytest.raises(RecipeError) as err:
        parse_config(bad, base_dir=tmp_path)
    text = str(err.value)
    for field in ("adapter", "lora_r", "learning_rate", "datasets.0.type", "epochs_typo"):
        assert field in text, text
    assert len(err.value.problems) >= 5


def test_cross_field_problems_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="early_stopping_patience needs val_set_size"):
        parse_config({"datasets": [{"path": "a.jsonl", "type": "alpaca"}], "early_stopping_patience": 2})
    with pytest.raises(RecipeError, match="at least one dataset"):
        parse_config({})
    with pytest.raises(RecipeError, match="does not exist"):
        parse_config({"datasets": [{"path": "missing.jsonl", "type": "alpaca"}]}, base_dir=tmp_path)


def test_shipped_recipes_are_valid() -> None:
    for recipe in sorted(RECIPES.glob("*.yaml")):
        config = load_config(recipe)
        assert config.datasets and all(d.path.is_file() for d in config.datasets)


def test_malformed_jsonl_names_file_and_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "q", "output": "a"}, "{not json", "[1, 2]"])
    with pytest.raises(DatasetError) as err:
        read_records(path)
    assert f"{path}:2: malformed JSON line" in str(err.value)
    assert f"{path}:3: expected a JSON object" in str(err.value)


def test_missing_fields_empty_data_and_bad_chats(tmp_path: Path) -> None:
    spec = DatasetSpec(path=tmp_path / "d.jsonl", type="alpaca")
    with pytest.raises(DatasetError, match=r"record 2: missing field\(s\) \['output'\]"):
        convert_rows(spec, [{"instruction": "q", "output": "a"}, {"instruction": "q"}])
    with pytest.raises(DatasetError, match="dataset is empty"):
        convert_rows(spec, [])
    chat = DatasetSpec(path=tmp_path / "c.jsonl", type="chat")
    with pytest.raises(DatasetError, match="last message must be the assistant"):
        convert_rows(chat, [{"messages": [{"role": "user", "content": "hi"}]}])
    dpo = DatasetSpec(path=tmp_path / "p.jsonl", type="dpo")
    rows = convert_rows(dpo, [{"prompt": "p", "chosen": "c", "rejected": "r"}])
    assert rows[0]["chosen"] == [{"role": "assistant", "content": "c"}]


def test_overlength_samples_are_counted_and_dropped_or_truncated(
    tmp_path: Path, base_model_path: Path
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model_path)
    long = " ".join(["word"] * 300)
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"prompt": "Say hi", "completion": "Hi!"},
            {"prompt": long, "completion": "ok"},
            {"prompt": "x", "completion": "y"},
        ],
    )
    specs = [DatasetSpec(path=path, type="prompt_completion")]
    dropped = load_datasets(specs, tokenizer, max_seq_length=64, overlength="drop", val_set_size=0, seed=0)
    assert (dropped.stats.overlength, dropped.stats.dropped, dropped.stats.train_samples) == (1, 1, 2)
    kept = load_datasets(
        specs, tokenizer, max_seq_length=64, overlength="truncate", val_set_size=0.34, seed=0
    )
    assert (kept.stats.truncated, kept.stats.train_samples, kept.stats.eval_samples) == (1, 2, 1)
    with pytest.raises(DatasetError, match="no sample fits"):
        load_datasets(specs, tokenizer, max_seq_length=8, overlength="drop", val_set_size=0, seed=0)


def test_qlora_without_cuda_says_so(tmp_path: Path) -> None:
    # Stand-in for what cannot exist here: this machine has no CUDA GPU, so QLoRA must refuse clearly.
    config = load_config(RECIPES / "company_facts.yaml", adapter="qlora", output_dir=tmp_path / "q")
    with pytest.raises(HardwareError, match="qlora needs a CUDA GPU"):
        train(config, models=ModelSettings())
    assert not (tmp_path / "q").exists()


def test_cli_reports_recipe_problems(tmp_path: Path) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("adapter: lora\nlora_r: -3\ndatasets:\n  - path: nope.jsonl\n    type: alpaca\n")
    result = CliRunner().invoke(app, ["train", str(recipe)])
    assert result.exit_code == 2
    assert "lora_r" in result.output
    help_text = CliRunner().invoke(app, ["train", "--help"]).output
    assert "reranker" in help_text and "embedder" in help_text


@pytest.mark.parametrize("kind", ["reranker", "embedder"])
def test_cli_leaves_unset_retriever_options_to_the_trainer(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI sets only the options given, so the trainer's config holds the one set of (measured) defaults, and
    a bad option is refused before training with the field it concerns (the training itself is exercised in
    test_retrievers.py; here a recorder stands in for it)."""
    import training.retrievers.embedder as embedder_module
    import training.retrievers.reranker as reranker_module

    module = reranker_module if kind == "reranker" else embedder_module
    config_type = module.RerankerConfig if kind == "reranker" else module.EmbedderConfig  # type: ignore[attr-defined]
    calls: list[tuple[tuple[object, ...], dict[str, object]]] = []

    def record(*args: object, **kwargs: object) -> object:
        calls.append((args, kwargs))
        raise RecipeError(["recorded"])

    monkeypatch.setattr(module, f"train_{kind}", record)
    ids = tmp_path / "train-ids.txt"
    ids.write_text("q1\nq2\n\n")
    runner = CliRunner()
    assert runner.invoke(app, ["train", kind, str(tmp_path)]).exit_code == 2
    args = ["train", kind, str(tmp_path), "--epochs", "2.5", "--train-queries", str(ids), "-o", "x"]
    assert runner.invoke(app, args).exit_code == 2
    (default_args, default_call), (given_args, given_call) = calls
    assert default_args == (tmp_path, Path("outputs") / kind)
    assert default_call["config"] == config_type()
    assert given_args == (tmp_path, Path("x"))
    given = given_call["config"]
    assert given == config_type(epochs=2.5, train_query_ids=["q1", "q2"])
    assert given.learning_rate == config_type().learning_rate  # type: ignore[attr-defined]

    bad = runner.invoke(app, ["train", kind, str(tmp_path), "--epochs", "0", "--batch-size", "-2"])
    assert bad.exit_code == 2 and len(calls) == 2
    assert "epochs" in bad.output and "batch_size" in bad.output
