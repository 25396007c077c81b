"""Short real runs: checkpoint/resume, chat and packed-text datasets go through TRL to a saved adapter."""

from __future__ import annotations

import json
from pathlib import Path

from ragswap import ModelSettings
from ragswap.adapter_manifest import AdapterManifest
from training import parse_config, train

CHATS = [
    {
        "messages": [
            {"role": "user", "content": f"Ticket {i}: my Helixmeter shows error E{i}."},
            {"role": "assistant", "content": f"Error E{i} means the resonance probe needs recalibration."},
        ]
    }
    for i in range(6)
]


def _recipe(tmp_path: Path, data: Path, kind: str, **extra: object) -> dict[str, object]:
    return {
        "datasets": [{"path": str(data), "type": kind}],
        "micro_batch_size": 2,
        "max_seq_length": 96,
        "lora_r": 4,
        "lora_alpha": 8,
        "output_dir": str(tmp_path / "out"),
        **extra,
    }


def test_resume_continues_from_the_last_checkpoint(tmp_path: Path) -> None:
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in CHATS))
    first = train(
        parse_config(_recipe(tmp_path, data, "chat", max_steps=2, save_steps=1)),
        models=ModelSettings(),
        progress=False,
    )
    assert first.global_step == 2
    checkpoints = sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir())
    assert "checkpoint-2" in checkpoints
    resumed = train(
        parse_config(_recipe(tmp_path, data, "chat", max_steps=3, save_steps=1)),
        models=ModelSettings(),
        resume=True,
        progress=False,
    )
    assert resumed.global_step == 3
    manifest = AdapterManifest.read(tmp_path / "out")
    assert manifest.metrics["global_step"] == 3
    assert manifest.dataset["samples"] == len(CHATS)


def test_packed_text_pretraining(tmp_path: Path) -> None:
    data = tmp_path / "text.jsonl"
    doc = "Quorvantis Instruments measures glacier resonance with the Helixmeter 9. " * 12
    data.write_text("".join(json.dumps({"text": doc}) + "\n" for _ in range(3)))
    result = train(
        parse_config(_recipe(tmp_path, data, "text", max_steps=1, max_seq_length=64)),
        models=ModelSettings(),
        progress=False,
    )
    manifest = AdapterManifest.read(result.output_dir)
    assert manifest.task == "sft" and manifest.dataset["files"][0]["type"] == "text"
    assert (result.output_dir / "adapter_model.safetensors").is_file()
