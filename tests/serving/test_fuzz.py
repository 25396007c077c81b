"""Schema fuzzing of the live gateway: schemathesis, with an admin key, against ``/openapi.json``.

A fixed seed and a bounded budget (8 examples per operation in the fuzzing phase, plus the examples, coverage and
stateful phases: ~2,400 cases, ~1 minute here; ``bench/reliability.py`` runs a larger budget). Every operation is
exercised, with the stateful phase following the links schemathesis infers from the document. Asserted: no 5xx (also counted by the gateway's own error metric), every response
conforms to the document (status, content type, headers, body), undeclared methods answer 405 with ``Allow``,
authentication is enforced, and schemathesis itself did not crash.

The gateway runs over the session's real vLLM engine with ``max_tokens`` capped at 4 for the run (the fuzzer asks
for anything the schema allows, e.g. ``n=16``), and holds an adapter, an alias and a collection with documents so
that operations on existing resources are reached, not only their 404s.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench._fuzz import run_schemathesis, seed_resources
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
    gw.fuzz_parameters = seed_resources(gw.url, gw.admin_key, lora_adapters["alpha"], BASE)  # type: ignore[attr-defined]
    yield gw
    gw.server.stop()


def test_schemathesis_finds_no_5xx_and_no_schema_violation(fuzz_gateway: Gateway, tmp_path: Path) -> None:
    report = run_schemathesis(
        fuzz_gateway.url,
        fuzz_gateway.admin_key,
        tmp_path / "fuzz",
        seed=42,
        max_examples=8,
        parameters=fuzz_gateway.fuzz_parameters,  # type: ignore[attr-defined]
        timeout_s=600,
    )
    summary = f"{report.cases} cases in {report.seconds:.0f} s\n{report.output[-6000:]}"
    assert not report.errors, summary  # schemathesis ran to the end
    assert report.server_errors == 0, summary
    assert not report.failures, summary
    assert report.operations_tested == report.operations, summary
    assert report.cases >= 800, summary
