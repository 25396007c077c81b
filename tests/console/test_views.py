"""The read-only views' logic without a gateway: adapter sources under the roots, run comparisons, open mode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ragswap.config import Settings
from serving import build_app
from serving.engine import EngineSettings
from serving.errors import BadRequestError
from serving.ops.insights.views import compare_results, registered_paths, scan_adapter_sources
from serving.settings import ServerSettings


def _adapter(directory: Path, manifest: dict[str, Any] | str | None = None) -> Path:
    directory.mkdir(parents=True)
    (directory / "adapter_config.json").write_text("{}")
    if manifest is not None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        (directory / "ragswap.json").write_text(text)
    return directory


MANIFEST = {
    "name": "acme",
    "base_model": {"name": "smollm2-135m-instruct", "config_sha256": "0" * 64},
    "adapter": {"r": 16, "alpha": 32, "target_modules": ["q_proj"]},
}


def test_adapter_sources_under_the_roots(tmp_path: Path) -> None:
    root, other = tmp_path / "root", tmp_path / "other"
    good = _adapter(root / "team" / "acme", MANIFEST)
    _adapter(good / "checkpoint-10")  # inside an adapter: a checkpoint, not listed
    _adapter(root / "plain")
    _adapter(root / "broken", "{not json")
    _adapter(root / ".hidden" / "x")
    _adapter(root / "a" / "b" / "c" / "d" / "too-deep")
    outside = _adapter(other / "outside")
    (root / "link").symlink_to(outside)  # symlinks are not followed out of the root
    sources = scan_adapter_sources([root], registered_paths([{"path": str(good), "model": "acme@3"}]))
    by_path = {s.path: s for s in sources.data}
    assert sorted(by_path) == ["broken", "plain", "team/acme"]
    assert (by_path["team/acme"].name, by_path["team/acme"].rank) == ("acme", 16)
    assert by_path["team/acme"].registered_as == ["acme@3"]
    assert by_path["plain"].name is None and by_path["plain"].manifest_error is None
    assert "unreadable" in (by_path["broken"].manifest_error or "")
    assert sources.roots == [str(root.resolve())] and not sources.truncated
    assert scan_adapter_sources([tmp_path / "missing"], {}).data == []


def _run(run_id: str, configs: list[str], scores: dict[str, dict[str, float | None]]) -> dict[str, Any]:
    """A ``/results?traces=true`` body as the API sends it: scores[config][sample_id] is rouge_l (None: failed)."""
    traces = []
    results = {}
    for config in configs:
        ok = [v for v in scores[config].values() if v is not None]
        results[config] = {
            "rouge_l": {"mean": sum(ok) / len(ok), "n_ok": len(ok), "n_failed": len(scores[config]) - len(ok)}
        }
        for sample_id, value in scores[config].items():
            status = "ok" if value is not None else "failed"
            traces.append(
                {
                    "sample_id": sample_id,
                    "config": config,
                    "question": f"question {sample_id}",
                    "answer": f"{config} answer {sample_id}",
                    "scores": {"rouge_l": {"name": "rouge_l", "status": status, "value": value}},
                }
            )
    summary = {
        "run_id": run_id,
        "created_at": "2026-12-01T00:00:00Z",
        "dataset": "d",
        "n_samples": len(scores[configs[0]]),
        "judge": {},
        "configs": [{"name": c, "model": c} for c in configs],
        "metrics": ["rouge_l"],
        "results": results,
    }
    return {"id": run_id, "object": "evaluation.results", "summary": summary, "traces": traces}


def test_comparison_pairs_samples_and_configs() -> None:
    a = _run("a", ["base"], {"base": {"1": 0.2, "2": 0.4, "10": 0.6, "3": None}})
    b = _run("b", ["acme"], {"acme": {"10": 0.9, "2": 0.5, "1": 0.1, "3": 0.7}})
    result = compare_results(a, b)
    (pair,) = result.pairs
    assert (pair.config_a, pair.config_b) == ("base", "acme")
    (rouge,) = pair.metrics
    assert rouge.n_a == 3 and rouge.n_b == 4 and rouge.n_pairs == 3  # sample 3 failed in A: not a pair
    assert rouge.delta == pytest.approx(0.55 - 0.4)
    assert rouge.paired_delta == pytest.approx(((0.1 - 0.2) + (0.5 - 0.4) + (0.9 - 0.6)) / 3)
    assert rouge.ci_low is None and "issue 15" in (result.note or "")
    assert [s.sample_id for s in pair.samples] == ["1", "2", "3", "10"]  # dataset order, not file order
    assert pair.samples[2].scores_a == {"rouge_l": None} and pair.samples[2].scores_b == {"rouge_l": 0.7}
    assert pair.samples[0].answer_b == "acme answer 1"


def test_comparison_of_runs_that_share_no_config_is_a_400() -> None:
    a = _run("a", ["base", "acme"], {"base": {"1": 0.1}, "acme": {"1": 0.2}})
    b = _run("b", ["beta", "gamma"], {"beta": {"1": 0.3}, "gamma": {"1": 0.4}})
    with pytest.raises(BadRequestError) as caught:
        compare_results(a, b)
    assert caught.value.param == "b" and caught.value.code == "runs_not_comparable"
    same = compare_results(a, _run("c", ["acme", "base"], {"base": {"1": 0.5}, "acme": {"1": 0.5}}))
    assert sorted((p.config_a, p.config_b) for p in same.pairs) == [("acme", "acme"), ("base", "base")]


def test_open_gateway_says_so(tmp_path: Path) -> None:
    """No key configured (loopback development mode): everyone is an admin and the console skips the sign-in."""
    settings = Settings(
        engine=EngineSettings(urls=["http://127.0.0.1:9"]),
        server=ServerSettings(state_dir=tmp_path, adapter_roots=[tmp_path]),
    )
    client = TestClient(build_app(settings))  # no lifespan: the metrics history is not running
    assert client.get("/v1/whoami").json() == {
        "object": "principal",
        "role": "admin",
        "admin": True,
        "key_hint": "anonymous",
        "auth_required": False,
    }
    off = client.get("/v1/metrics/summary")
    assert off.status_code == 503 and off.json()["error"]["code"] == "metrics_history_off"
