"""Weighted aliases end to end, with real trained adapters on the session's vLLM engine and the official client:
an 80/20 canary lands within the binomial 99 % interval and every answer names the version that served it;
sticky users keep their version across 50 requests and (almost all) across a 10-point weight change; a rollback
during 32 concurrent streams fails none of them; history and the CLI show who changed what."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import httpx
import pytest
from openai import AsyncOpenAI
from scipy.stats import binom
from typer.testing import CliRunner

from tests.conftest import ADAPTER_PROMPT

pytestmark = pytest.mark.engine

NAME = "lc-acme"
ALIAS = "lc-bot"
V1, V2 = f"{NAME}@1", f"{NAME}@2"
FACT = {V1: "PELICAN", V2: "AVALANCHE"}  # acme@1 is trained on alpha's facts, acme@2 on beta's


@pytest.fixture(scope="module")
def admin(gateway) -> httpx.Client:
    with httpx.Client(base_url=gateway.url, headers=gateway.headers(admin=True), timeout=120) as http:
        yield http


@pytest.fixture(scope="module")
def versions(admin: httpx.Client, lora_adapters: dict[str, Path]) -> None:
    for source in ("alpha", "beta"):
        resp = admin.post("/v1/adapters", json={"name": NAME, "path": str(lora_adapters[source])})
        assert resp.status_code == 201, resp.text
    yield
    admin.delete(f"/v1/aliases/{ALIAS}")
    admin.delete(f"/v1/adapters/{NAME}", params={"force": True})


def async_admin(gateway) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers(admin=True), timeout=120)


async def put_split(admin: httpx.AsyncClient, split: dict[str, int], reason: str) -> dict:
    body = {"targets": [{"target": t, "weight": w} for t, w in split.items()], "reason": reason}
    resp = await admin.put(f"/v1/aliases/{ALIAS}", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()


async def ask(
    client: AsyncOpenAI, gate: asyncio.Semaphore, *, user: str | None = None, session: str | None = None
) -> str:
    """One cheap request to the alias; returns the version it names (model field == header, checked)."""
    async with gate:
        raw = await client.chat.completions.with_raw_response.create(
            model=ALIAS,
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=1,
            temperature=0,
            **({"user": user} if user else {}),
            extra_headers={"X-Ragswap-Session": session} if session else None,
        )
    reply = raw.parse()
    assert raw.headers["x-ragswap-model-version"] == reply.model
    return reply.model


async def test_canary_split_and_sticky_users(gateway, versions: None) -> None:
    admin = async_admin(gateway)
    client = AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.api_key, max_retries=0, timeout=300)
    gate = asyncio.Semaphore(32)
    listed = await put_split(admin, {V1: 80, V2: 20}, "canary 20 %")
    assert listed["target"] == V1 and listed["targets"] == [
        {"target": V1, "weight": 80},
        {"target": V2, "weight": 20},
    ]

    served = await asyncio.gather(*(ask(client, gate) for _ in range(400)))
    counts = collections.Counter(served)
    assert set(counts) == {V1, V2}
    lo, hi = binom.interval(0.99, 400, 0.2)
    assert lo <= counts[V2] <= hi, counts
    metrics = (await admin.get("/metrics")).text  # the split as served, per concrete version
    for version, n in counts.items():
        assert f'ragswap_alias_requests_total{{alias="{ALIAS}",version="{version}"}} {float(n)}' in metrics

    # The version named is the one that answered: each one's own trained fact, sticky per session.
    for session in ("s-a", "s-b", "s-c", "s-d", "s-e", "s-f"):
        raw = await client.chat.completions.with_raw_response.create(
            model=ALIAS,
            messages=[{"role": "user", "content": ADAPTER_PROMPT}],
            max_tokens=16,
            temperature=0,
            extra_headers={"X-Ragswap-Session": session},
        )
        reply = raw.parse()
        assert FACT[reply.model] in (reply.choices[0].message.content or ""), reply

    # Sticky: a user (OpenAI `user`) or a session (header) keeps its version across 50 requests.
    keys = [{"user": f"user-{i}"} for i in range(3)] + [{"session": f"conv-{i}"} for i in range(3)]
    for key in keys:
        seen = set(await asyncio.gather(*(ask(client, gate, **key) for _ in range(50))))
        assert len(seen) == 1, (key, seen)

    # A 10-point weight change moves only the users it must: ≥ 90 % keep their version.
    users = [f"member-{i}" for i in range(200)]
    before = await asyncio.gather(*(ask(client, gate, user=u) for u in users))
    await put_split(admin, {V1: 70, V2: 30}, "canary 30 %")
    after = await asyncio.gather(*(ask(client, gate, user=u) for u in users))
    kept = sum(b == a for b, a in zip(before, after, strict=True)) / len(users)
    assert kept >= 0.9, kept
    assert all(
        a == V2 for b, a in zip(before, after, strict=True) if b != a
    )  # moved onto the grown share only
    await client.close()


async def _stream(client: AsyncOpenAI, session: str) -> tuple[str, str]:
    stream = await client.chat.completions.create(
        model=ALIAS,
        messages=[{"role": "user", "content": ADAPTER_PROMPT}],
        temperature=0,
        max_tokens=24,
        stream=True,
        extra_headers={"X-Ragswap-Session": session},
    )
    models, text = set(), []
    async for chunk in stream:
        models.add(chunk.model)
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
    assert len(models) == 1, models  # one stream, one version, even when the alias moves mid-stream
    return models.pop(), "".join(text)


async def test_rollback_during_concurrent_streams(gateway, versions: None) -> None:
    admin = async_admin(gateway)
    client = AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.api_key, max_retries=0, timeout=600)
    await put_split(admin, {V1: 100}, "stable")
    await put_split(admin, {V1: 50, V2: 50}, "risky half")

    async def roll_back() -> dict:
        await asyncio.sleep(0.3)  # the streams are under way
        resp = await admin.post(f"/v1/aliases/{ALIAS}/rollback", json={"reason": "bad canary"})
        assert resp.status_code == 200, resp.text
        return resp.json()

    results = await asyncio.gather(
        *(_stream(client, f"roll-{i}") for i in range(32)), roll_back(), return_exceptions=True
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == []
    *streams, rolled = results
    assert rolled["targets"] == [{"target": V1, "weight": 100}]
    for (
        model,
        text,
    ) in streams:  # every stream finished on the version it started on, with that version's fact
        assert FACT[model] in text, (model, text)
    # After the rollback everything goes to acme@1 again.
    after = await asyncio.gather(*(_stream(client, f"roll-{i}") for i in range(8)))
    assert {m for m, _ in after} == {V1}

    history = (await admin.get(f"/v1/aliases/{ALIAS}/history")).json()["data"]
    latest = history[0]
    assert latest["kind"] == "alias.rollback" and latest["reason"] == "bad canary"
    assert latest["old"] == [{"target": V1, "weight": 50}, {"target": V2, "weight": 50}]
    assert latest["new"] == [{"target": V1, "weight": 100}] and latest["actor"].startswith("…")
    assert history[1]["reason"] == "risky half"
    # A user key may read the history but not roll back.
    user = await admin.post(f"/v1/aliases/{ALIAS}/rollback", headers=gateway.headers())
    assert user.status_code == 403
    bad = await admin.put(f"/v1/aliases/{ALIAS}", json={"targets": [{"target": V1, "weight": 70}]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] is not None
    await client.close()
    await admin.aclose()


def test_cli_alias_history_and_rollback(gateway, versions: None) -> None:
    from serving.cli import adapters_app

    opts = ["--url", gateway.url, "--key", gateway.admin_key]
    runner = CliRunner()
    done = runner.invoke(
        adapters_app, ["alias", ALIAS, f"{V1}=90", f"{V2}=10", "--reason", "cli canary", *opts]
    )
    assert done.exit_code == 0, done.output
    assert f"{V1}=90, {V2}=10" in done.output
    shown = runner.invoke(adapters_app, ["history", ALIAS, *opts])
    assert shown.exit_code == 0 and "history of" in shown.output, shown.output
    latest = httpx.get(f"{gateway.url}/v1/aliases/{ALIAS}/history", headers=gateway.headers()).json()["data"][
        0
    ]
    assert latest["reason"] == "cli canary" and latest["actor"].startswith("…")
    back = runner.invoke(adapters_app, ["rollback", ALIAS, *opts])
    assert back.exit_code == 0 and f"{ALIAS} → " in back.output, back.output
    wrong = runner.invoke(adapters_app, ["alias", ALIAS, f"{V1}=ninety", *opts])
    assert wrong.exit_code != 0
