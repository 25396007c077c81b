"""Schemathesis against a live gateway: one runner for the suite's fixed-seed fuzz test and the bench's large run.

It writes a schemathesis config (seed, budget, checks, known resource names for path parameters), runs the
``st run`` command against ``/openapi.json`` with an admin key, and reads its JSON report. The gateway's own error
metric counts every 5xx it answered during the run, whatever schemathesis deduplicated.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

CHECKS: tuple[str, ...] = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "allow_header_conformance",
    "unsupported_method",
    "missing_required_header",
    "ignored_auth",
    "use_after_free",
    "ensure_resource_availability",
)
"""Every response conforms to the document, and no 5xx. ``negative_data_rejection`` (a schema-invalid body must
be a 4xx) is checked on :data:`STRICT_OPERATIONS` only: other areas' bodies coerce (``"b": false`` as 0.0)."""
STRICT_OPERATIONS: tuple[str, ...] = ("/v1/chat/completions", "/v1/completions")
SERVER_ERROR_CODES = frozenset({"ST101", "ST102"})
"""Schemathesis' failure codes for a 5xx answer."""


@dataclass
class FuzzReport:
    cases: int
    """Test cases schemathesis generated and sent."""
    operations: int
    operations_tested: int
    server_errors: int
    """5xx answers the gateway counted in ``ragswap_request_errors_total`` during the run."""
    failures: list[dict[str, Any]] = field(default_factory=list)
    """Schemathesis' failure groups (type, code, count, operations)."""
    errors: list[dict[str, Any]] = field(default_factory=list)
    """Runs that crashed inside schemathesis (network errors, its own bugs)."""
    seconds: float = 0.0
    exit_code: int = 0
    output: str = ""

    @property
    def failure_cases(self) -> int:
        return sum(int(f.get("count", 1)) for f in self.failures)


OperationParameters = dict[tuple[str, str], dict[str, str]]
"""``(method, path)`` → schemathesis parameters for that operation only."""


def seed_resources(base_url: str, admin_key: str, adapter_path: Path, base_model: str) -> OperationParameters:
    """Give the fuzzer something to find: an adapter, an alias on it, a collection with two documents.

    Returns:
        path parameters naming them, for the operations that read or extend them. Operations that delete get none
        (they would remove what later cases read, and the stateful phase would then find a fixed name gone where it
        follows a link from something it just created).
    """
    headers = {"Authorization": f"Bearer {admin_key}"}
    docs = [{"id": "doc-0", "text": "The vault opens at dawn."}, {"id": "doc-1", "text": "Bring a lamp."}]
    with httpx.Client(base_url=base_url, headers=headers, timeout=300) as admin:
        admin.post("/v1/adapters", json={"name": "fz-alpha", "path": str(adapter_path)}).raise_for_status()
        admin.put("/v1/aliases/fz-live", json={"target": "fz-alpha@1"}).raise_for_status()
        admin.post("/v1/collections", json={"name": "fz-kb"}).raise_for_status()
        admin.post("/v1/collections/fz-kb/documents", json={"documents": docs}).raise_for_status()
    return {
        ("GET", "/v1/models/{model}"): {"path.model": base_model},
        ("GET", "/v1/adapters/{ref}"): {"path.ref": "fz-alpha"},
        ("PUT", "/v1/aliases/{alias}"): {"path.alias": "fz-live"},
        ("POST", "/v1/collections/{name}/documents"): {"path.name": "fz-kb"},
    }


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value)


def write_config(
    path: Path,
    *,
    seed: int,
    max_examples: int,
    phases: tuple[str, ...],
    parameters: OperationParameters,
    workers: int,
    no_coverage: tuple[str, ...] = (),
) -> None:
    lines = [f"seed = {seed}", f"workers = {workers}", "request-timeout = 300", "", "[generation]"]
    lines += [f"max-examples = {max_examples}", "", "[phases]"]
    for phase in ("examples", "coverage", "fuzzing", "stateful"):
        lines.append(f"{phase}.enabled = {_toml(phase in phases)}")
    lines += ["", "[checks]", "enabled = false"]
    lines += [f"{check}.enabled = true" for check in CHECKS]
    for operation in dict.fromkeys((*STRICT_OPERATIONS, *no_coverage)):
        lines += ["", "[[operations]]", f"include-path = {json.dumps(operation)}"]
        if operation in STRICT_OPERATIONS:
            lines += ["checks.negative_data_rejection.enabled = true"]
        if operation in no_coverage:
            lines += ["phases.coverage.enabled = false"]
    for (method, operation), values in parameters.items():
        table = ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in values.items())
        lines += ["", "[[operations]]", f"include-method = {json.dumps(method)}"]
        lines += [f"include-path = {json.dumps(operation)}", f"parameters = {{ {table} }}"]
    path.write_text("\n".join(lines) + "\n")


def _server_errors(base_url: str) -> float:
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("ragswap_request_errors_total{") and 'status="5' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def run_schemathesis(
    base_url: str,
    admin_key: str,
    out_dir: Path,
    *,
    seed: int = 42,
    max_examples: int = 10,
    phases: tuple[str, ...] = ("examples", "coverage", "fuzzing", "stateful"),
    parameters: OperationParameters | None = None,
    workers: int = 1,
    no_coverage: tuple[str, ...] = (),
    timeout_s: float = 1800.0,
) -> FuzzReport:
    """Run schemathesis once against ``base_url`` and summarise its JSON report.

    Args:
        parameters: values for path parameters per operation (:func:`seed_resources`) so that operations on
            existing resources are reached, not only their 404s.
        workers: 1 keeps the run deterministic for a seed (and avoids a thread-safety crash of hypothesis seen
            with several workers).
        no_coverage: paths whose coverage phase is skipped (the inference operations in the suite's run: their
            several hundred schema-derived cases each reach the engine; the bench runs them).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    config = out_dir / "schemathesis.toml"
    write_config(
        config,
        seed=seed,
        max_examples=max_examples,
        phases=phases,
        parameters=parameters or {},
        workers=workers,
        no_coverage=no_coverage,
    )
    report_path = out_dir / "report.json"
    before = _server_errors(base_url)
    cmd = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "run",
        f"{base_url}/openapi.json",
        "--header",
        f"Authorization: Bearer {admin_key}",
        "--report",
        "json",
        "--report-json-path",
        str(report_path),
        "--warnings",
        "off",
    ]
    start = time.perf_counter()
    # In out_dir: schemathesis keeps a cache of crashes under its working directory.
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False, cwd=out_dir)
    seconds = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    if not report_path.is_file():
        raise RuntimeError(f"schemathesis wrote no report (exit {proc.returncode}):\n{output[-4000:]}")
    report = json.loads(report_path.read_text())
    (out_dir / "output.txt").write_text(output)
    return FuzzReport(
        cases=int(report["test_cases"]["generated"]),
        operations=int(report["operations"]["total"]),
        operations_tested=int(report["operations"]["tested"]),
        server_errors=int(_server_errors(base_url) - before),
        failures=list(report.get("failures") or []),
        errors=list(report.get("errors") or []),
        seconds=seconds,
        exit_code=proc.returncode,
        output=output,
    )
