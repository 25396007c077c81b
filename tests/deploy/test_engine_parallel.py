"""``engine.parallel``: vLLM's tensor/pipeline parallelism and Ray backend as checked settings that render the
engine's flags (no GPU here: what is tested is the command and environment ragswap would start vLLM with)."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from serving.engine import EngineSettings, engine_command, engine_env
from tests.deploy.test_manifests import DEPLOY


def test_single_device_default_adds_no_flags() -> None:
    settings = EngineSettings()
    cmd = engine_command(settings, "/models/m", "m", 8100)
    assert not {"--tensor-parallel-size", "--pipeline-parallel-size", "--distributed-executor-backend"} & set(
        cmd
    )
    assert settings.parallel.env() == {} and settings.parallel.world_size == 1


def test_multinode_manifest_renders_vllm_flags() -> None:
    """The settings of deploy/k8s/multinode/engine-ray.yaml start vLLM with TP within nodes, PP across them, Ray."""
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "multinode" / "engine-ray.yaml").read_text()))
    head = next(d for d in docs if d["metadata"]["name"] == "ragswap-engine-ray-head")
    env = {e["name"]: e["value"] for e in head["spec"]["template"]["spec"]["containers"][0]["env"]}
    prefix = "RAGSWAP_ENGINE__PARALLEL__"
    parallel = {k[len(prefix) :].lower(): v for k, v in env.items() if k.startswith(prefix)}
    settings = EngineSettings(parallel=parallel)
    cmd = engine_command(settings, "/models/m", "m", 8100)
    flags = " ".join(cmd[cmd.index("--tensor-parallel-size") :])
    assert flags.startswith(
        "--tensor-parallel-size 8 --pipeline-parallel-size 2 --distributed-executor-backend ray"
    )
    assert engine_env(settings)["RAY_ADDRESS"] == "auto"
    assert settings.parallel.world_size == 16
    gpus = head["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert gpus == settings.parallel.gpus_per_node


@pytest.mark.parametrize(
    ("parallel", "message"),
    [
        ({"nodes": 2, "tensor_parallel_size": 2}, "needs backend: ray"),
        ({"nodes": 2, "pipeline_parallel_size": 3, "backend": "ray"}, "does not divide over nodes=2"),
        (
            {"nodes": 2, "gpus_per_node": 4, "tensor_parallel_size": 8, "backend": "ray"},
            "span nodes with pipeline_parallel_size",
        ),
        ({"gpus_per_node": 4, "tensor_parallel_size": 4, "pipeline_parallel_size": 2}, "needs 8 GPUs"),
        ({"ray_address": "ray-head:6379"}, "only used with backend: ray"),
        ({"tensor_parallel_size": 0}, "greater than or equal to 1"),
        ({"tensor_paralel_size": 2}, "Extra inputs are not permitted"),
    ],
)
def test_inconsistent_parallelism_is_refused_at_start(parallel: dict, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        EngineSettings(parallel=parallel)
    assert message in str(info.value)


def test_parallel_flags_cannot_bypass_the_checks() -> None:
    with pytest.raises(ValidationError) as info:
        EngineSettings(extra_args=["--tensor-parallel-size=4"])
    assert "engine.parallel" in str(info.value)
    with pytest.raises(ValidationError):
        EngineSettings(extra_args=["-pp", "2"])
    assert EngineSettings(extra_args=["--enforce-eager"]).extra_args == ["--enforce-eager"]
