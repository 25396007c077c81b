"""Schema fuzzing of the live gateway: schemathesis, with an admin key, against ``/openapi.json``.

A fixed seed and a bounded budget (a few examples per operation; the inference operations skip the coverage
phase, whose hundreds of schema-derived cases each reach the engine, and are covered by the bench's large run:
``bench/reliability.py``). Every operation is exercised, with the stateful phase following the links schemathesis
infers from the document. Asserted: no 5xx (also counted by the gateway's own error metric), every response
conforms to the document (status, content type, headers, body), undeclared methods answer 405 with ``Allow``,
authentication is enforced, and schemathesis itself did not crash.

The gateway runs over the session's real vLLM engine with ``max_tokens`` capped at 4 for the run (the fuzzer asks
for anything the schema allows, e.g. ``n=16``), and holds an adapter, an alias and a collection with documents so
that operations on existing resources are reached, not only their 404s.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench._fuzz import run_schemathesis
from tests.conftest import Gateway, gateway_settings, start_gateway

pytestmark = pytest.mark.engine

BASE = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def fuzz_gateway(
    engine, engine_settings, lora_adapters, adapter_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    settings = gateway_settings(
        engine.url,
        engine_settings,
        adapter_root,
        tmp_path_factory.mktemp("fuzz-state"),
        default_max_tokens=4,
        max_tokens_limit=4,
    )
    gw = start_gateway(settings, adapter_root)
    with httpx.Client(base_url=gw.url, headers=gw.headers(admin=True), timeout=300) as admin:
        admin.post(
            "/v1/adapters", json={"name": "fz-alpha", "path": str(lora_adapters["alpha"])}
        ).raise_for_status()
        admin.put("/v1/aliases/fz-live", json={"target": "fz-alpha@1"}).raise_for_status()
        admin.post("/v1/collections", json={"name": "fz-kb"}).raise_for_status()
        docs = [{"id": "doc-0", "text": "The vault opens at dawn."}, {"id": "doc-1", "text": "Bring a lamp."}]
        admin.post("/v1/collections/fz-kb/documents", json={"documents": docs}).raise_for_status()
    yield gw
    gw.server.stop()


def test_schemathesis_finds_no_5xx_and_no_schema_violation(fuzz_gateway: Gateway, tmp_path: Path) -> None:
    report = run_schemathesis(
        fuzz_gateway.url,
        fuzz_gateway.admin_key,
        tmp_path / "fuzz",
        seed=42,
        max_examples=8,
        parameters={
            "path.ref": "fz-alpha",
            "path.alias": "fz-live",
            "path.name": "fz-kb",
            "path.document_id": "doc-0",
            "path.model": BASE,
        },
        no_coverage=("/v1/chat/completions", "/v1/completions"),
        timeout_s=600,
    )
    summary = f"{report.cases} cases in {report.seconds:.0f} s\n{report.output[-6000:]}"
    assert not report.errors, summary  # schemathesis ran to the end
    assert report.server_errors == 0, summary
    assert not report.failures, summary
    assert report.operations_tested == report.operations, summary
    assert report.cases >= 800, summary
