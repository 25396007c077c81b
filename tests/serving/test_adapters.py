"""Adapter registry through the API: hot load/unload, per-request selection, versions, aliases, validation
(every rejection a 4xx that leaves the registry as it was), a second gateway on the same control-plane database
and re-applying adapters an engine lost."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
import openai
import pytest
import torch
from openai import OpenAI

from tests.conftest import ADAPTER_PROMPT, gateway_settings, start_gateway

pytestmark = pytest.mark.engine

BASE = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def client(gateway) -> OpenAI:
    return OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.api_key, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def admin(gateway) -> httpx.Client:
    with httpx.Client(base_url=gateway.url, headers=gateway.headers(admin=True), timeout=120) as http:
        yield http


def answer(client: OpenAI, model: str, prompt: str = ADAPTER_PROMPT) -> str:
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=16
    )
    return reply.choices[0].message.content or ""


def register(admin: httpx.Client, **body) -> dict:
    resp = admin.post("/v1/adapters", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


@pytest.fixture(scope="module")
def registered(admin: httpx.Client, lora_adapters: dict[str, Path], client: OpenAI) -> dict[str, str]:
    """alpha and beta registered (version 1 each); their greedy answers and the base model's."""
    for name, path in lora_adapters.items():
        info = register(admin, name=f"t-{name}", path=str(path))
        assert info["model"] == f"t-{name}@1" and info["base_check"] == "manifest"
        assert [r["state"] for r in info["replicas"]] == ["loaded"]
    answers = {m: answer(client, m) for m in (BASE, "t-alpha", "t-beta")}
    yield answers
    for name in lora_adapters:
        admin.delete(f"/v1/adapters/t-{name}", params={"force": True})


def test_trained_adapters_change_answers(registered: dict[str, str]) -> None:
    assert len(set(registered.values())) == 3, registered
    assert "PELICAN" in registered["t-alpha"] and "AVALANCHE" in registered["t-beta"]


def test_models_list_has_adapters_with_parent(client: OpenAI, registered, lora_adapters) -> None:
    models = {m.id: m.model_extra for m in client.models.list()}
    for name in ("t-alpha", "t-alpha@1", "t-beta", "t-beta@1"):
        assert models[name]["parent"] == BASE  # type: ignore[index]
    assert models["t-alpha"]["root"] == str(lora_adapters["alpha"].resolve())  # type: ignore[index]


def test_per_request_selection_streaming(client: OpenAI, registered: dict[str, str]) -> None:
    for model, expected in registered.items():
        stream = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": ADAPTER_PROMPT}],
            temperature=0,
            max_tokens=16,
            stream=True,
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected


def test_versions(admin: httpx.Client, client: OpenAI, registered, lora_adapters) -> None:
    # Version 2 of t-alpha carries beta's weights: the bare name follows the latest version, @1 stays pinned.
    info = register(admin, name="t-alpha", path=str(lora_adapters["beta"]))
    assert info["version"] == 2 and info["latest"]
    assert answer(client, "t-alpha") == registered["t-beta"]
    assert answer(client, "t-alpha@1") == registered["t-alpha"]
    assert answer(client, "t-alpha@2") == registered["t-beta"]
    # Same version again: conflict, nothing changes.
    resp = admin.post(
        "/v1/adapters", json={"name": "t-alpha", "path": str(lora_adapters["beta"]), "version": 2}
    )
    assert resp.status_code == 409 and resp.json()["error"]["param"] == "version"
    listed = admin.get("/v1/adapters/t-alpha").json()["data"]
    assert [(a["version"], a["latest"]) for a in listed] == [(1, False), (2, True)]
    assert listed[1]["id"] > listed[0]["id"]
    resp = admin.delete("/v1/adapters/t-alpha@2")
    assert resp.status_code == 200 and resp.json()["deleted"] == ["t-alpha@2"]
    assert answer(client, "t-alpha") == registered["t-alpha"]
    with pytest.raises(openai.NotFoundError):
        answer(client, "t-alpha@2")


def test_alias_switch(admin: httpx.Client, client: OpenAI, registered) -> None:
    resp = admin.put("/v1/aliases/t-prod", json={"target": "t-alpha@1"})
    assert resp.status_code == 200 and resp.json()["target"] == "t-alpha@1"
    assert answer(client, "t-prod") == registered["t-alpha"]
    assert admin.put("/v1/aliases/t-prod", json={"target": "t-beta"}).json()["target"] == "t-beta@1"
    assert answer(client, "t-prod") == registered["t-beta"]
    assert "t-prod" in {m.id for m in client.models.list()}
    assert admin.get("/v1/adapters/t-beta@1").json()["data"][0]["aliases"] == ["t-prod"]
    # An adapter an alias points at cannot silently disappear.
    resp = admin.delete("/v1/adapters/t-beta")
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "adapter_in_use"
    assert admin.put("/v1/aliases/t-prod", json={"target": "nope@1"}).status_code == 404
    assert admin.put("/v1/aliases/t-alpha", json={"target": "t-beta"}).status_code == 409  # shadows a name
    assert admin.delete("/v1/aliases/t-prod").status_code == 204
    with pytest.raises(openai.NotFoundError):
        answer(client, "t-prod")


def test_hot_unload_and_reload(
    admin: httpx.Client, client: OpenAI, gateway, registered, lora_adapters
) -> None:
    engine_url = gateway.settings.engine.urls[0]
    assert admin.delete("/v1/adapters/t-beta").status_code == 200
    with pytest.raises(openai.NotFoundError) as info:
        answer(client, "t-beta")
    assert "t-alpha" in info.value.body["message"]  # type: ignore[index]
    engine_models = {m["id"] for m in httpx.get(f"{engine_url}/v1/models").json()["data"]}
    assert "t-beta@1" not in engine_models
    assert admin.delete("/v1/adapters/t-beta").status_code == 404
    info2 = register(admin, name="t-beta", path=str(lora_adapters["beta"]), version=1)
    assert info2["id"] > 0
    assert answer(client, "t-beta") == registered["t-beta"]


@pytest.fixture(scope="module")
def bad_adapters(base_model_path: Path, adapter_root: Path, lora_adapters) -> dict[str, Path]:
    """Real peft adapters the gateway must refuse, plus broken copies of a good one."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = adapter_root / "bad"
    out: dict[str, Path] = {}
    model = AutoModelForCausalLM.from_pretrained(base_model_path, dtype=torch.float32)
    for name, config in {
        "rank32": LoraConfig(r=32, target_modules=["q_proj", "v_proj"]),
        "modules-to-save": LoraConfig(r=4, target_modules=["q_proj"], modules_to_save=["lm_head"]),
    }.items():
        peft_model = get_peft_model(model, config, adapter_name=name)
        peft_model.save_pretrained(root / "tmp")
        shutil.move(root / "tmp" / name if (root / "tmp" / name).exists() else root / "tmp", root / name)
        shutil.rmtree(root / "tmp", ignore_errors=True)
        model = peft_model.unload()
        out[name] = root / name
    good = lora_adapters["alpha"]
    out["no-config"] = root / "no-config"
    shutil.copytree(good, out["no-config"])
    (out["no-config"] / "adapter_config.json").unlink()
    out["corrupt-weights"] = root / "corrupt-weights"
    shutil.copytree(good, out["corrupt-weights"])
    (out["corrupt-weights"] / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    out["wrong-base"] = root / "wrong-base"
    shutil.copytree(good, out["wrong-base"])
    manifest = json.loads((good / "ragswap.json").read_text())
    manifest["base_model"]["config_sha256"] = "0" * 64
    (out["wrong-base"] / "ragswap.json").write_text(json.dumps(manifest))
    return out


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("rank32", 400, "rank_too_large"),
        ("modules-to-save", 400, "modules_to_save_unsupported"),
        ("no-config", 400, "invalid_adapter"),
        ("corrupt-weights", 400, "invalid_adapter"),
        ("wrong-base", 400, "base_model_mismatch"),
    ],
)
def test_invalid_adapters_are_rejected(
    admin: httpx.Client, bad_adapters, case: str, status: int, code: str
) -> None:
    before = admin.get("/v1/adapters").json()
    resp = admin.post("/v1/adapters", json={"name": "t-bad", "path": str(bad_adapters[case])})
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code and resp.json()["error"]["param"] == "path"
    assert admin.get("/v1/adapters").json() == before


def test_path_traversal_is_refused(admin: httpx.Client, gateway, lora_adapters, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    shutil.copytree(lora_adapters["alpha"], outside)
    link = gateway.adapter_root / "sneaky-link"
    link.symlink_to(outside, target_is_directory=True)
    try:
        for path in (str(outside), "../../../../etc", "trained/../../outside", str(link), "sneaky-link"):
            resp = admin.post("/v1/adapters", json={"name": "t-evil", "path": path})
            assert resp.status_code == 403, (path, resp.text)
            assert resp.json()["error"]["code"] == "path_outside_roots"
    finally:
        link.unlink()
    resp = admin.post("/v1/adapters", json={"name": "t-evil", "path": "does/not/exist"})
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "adapter_not_found"
    resp = admin.post("/v1/adapters", json={"name": "bad name!", "path": "x"})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "name"


def test_engine_restart_gets_registry_reapplied(
    admin: httpx.Client, client: OpenAI, gateway, registered
) -> None:
    """Stand-in for an engine restart: the adapter vanishes from the engine behind the gateway's back."""
    engine_url = gateway.settings.engine.urls[0]
    resp = httpx.post(f"{engine_url}/v1/unload_lora_adapter", json={"lora_name": "t-alpha@1"})
    assert resp.status_code == 200
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        engine_models = {m["id"] for m in httpx.get(f"{engine_url}/v1/models").json()["data"]}
        if "t-alpha@1" in engine_models:
            break
        time.sleep(0.25)
    assert "t-alpha@1" in engine_models
    assert answer(client, "t-alpha") == registered["t-alpha"]


def test_registry_is_shared_by_a_second_gateway(
    gateway, engine, engine_settings, registered, tmp_path: Path
) -> None:
    """A second gateway process on the same control-plane database (the first one's SQLite file) routes by the
    same registry: what persists survives a restart, and a change made through one is seen by the other."""
    from controlplane import default_url

    resp = httpx.put(
        f"{gateway.url}/v1/aliases/t-stable",
        json={"target": "t-beta@1"},
        headers=gateway.headers(admin=True),
    )
    assert resp.status_code == 200
    settings = gateway_settings(
        engine.url,
        engine_settings,
        gateway.adapter_root,
        tmp_path / "state",
        database_url=default_url(gateway.state_dir),
    )
    second = start_gateway(settings, gateway.adapter_root)
    try:
        client2 = OpenAI(base_url=f"{second.url}/v1", api_key=second.api_key, max_retries=0, timeout=120)
        ids = {m.id for m in client2.models.list()}
        assert {"t-alpha@1", "t-beta@1", "t-stable"} <= ids
        assert answer(client2, "t-stable") == registered["t-beta"]
        assert answer(client2, "t-alpha") == registered["t-alpha"]
        # Switched through the second gateway: the first routes by it within its sync interval.
        resp = httpx.put(
            f"{second.url}/v1/aliases/t-stable",
            json={"target": "t-alpha@1"},
            headers=second.headers(admin=True),
        )
        assert resp.status_code == 200
        deadline = time.monotonic() + 2.0
        while gateway.app.state.registry.resolve("t-stable").canonical != "t-alpha@1":
            assert time.monotonic() < deadline, "the first gateway did not see the switch within 2 s"
            time.sleep(0.05)
        assert (
            answer(OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.api_key), "t-stable")
            == registered["t-alpha"]
        )
    finally:
        second.server.stop()
        httpx.delete(f"{gateway.url}/v1/aliases/t-stable", headers=gateway.headers(admin=True))
