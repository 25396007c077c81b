"""CI gates over a run's summary: requirements like ``faithfulness>=0.7`` or ``rouge_l>base+0.02``.

A pipeline that trains an adapter wants one yes/no with the reasons: ``ragswap eval gate RUN --require ...``
(exit 1 on failure), ``POST /v1/evaluations/{id}/gate``, or :func:`assert_gate` in a pytest test. All three call
:func:`evaluate_gate` on a :class:`~eval.records.RunSummary`.

Requirements (``METRIC OP VALUE``, ``OP`` one of ``>= > <= <``):

- **absolute**, ``faithfulness>=0.7``: the candidate config's mean over its scored samples;
- **relative**, ``rouge_l>base+0.02`` / ``ndcg>=base-0.05`` / ``rouge_l>base``: the paired difference
  d = candidate − baseline over the samples both scored (:mod:`eval.paired`). ``>``/``>=`` need the lower
  bound of d's 95 % bootstrap CI above (at least) δ, ``<``/``<=`` the upper bound below (at most) δ; a
  requirement that claims a difference (``> base``, ``>= base+δ`` with δ > 0, mirrored for ``<``) also needs
  Wilcoxon's p < 0.05, so "better" means detectably better. ``>= base-δ`` is a non-inferiority margin.

Whatever the threshold, a requirement also fails when its metric is LLM-judged and the judge check found the judge
unreliable for it (or the judge was not checked, unless ``allow_unchecked_judge``), when more than
``max_failed_fraction`` of the samples that should have scored failed (candidate, and baseline for relative
requirements), when nothing scored, or when a relative one has fewer than ``min_pairs`` paired samples.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from eval.paired import ALPHA
from eval.records import MetricSummary, PairedDelta, RunSummary
from eval.settings import ALL_METRICS, JUDGED_METRICS

Op = Literal[">=", ">", "<=", "<"]
_REQUIREMENT = re.compile(
    r"^\s*(?P<metric>[a-z_]+)\s*(?P<op>>=|<=|>|<)\s*"
    r"(?:(?P<base>base(?:line)?)\s*(?:(?P<sign>[+-])\s*(?P<delta>\d+(?:\.\d*)?|\.\d+))?|(?P<value>-?\d+(?:\.\d*)?|-?\.\d+))"
    r"\s*$"
)


class GateError(ValueError):
    """The gate cannot be evaluated as asked (bad requirement, unknown config); the message says what to fix."""


@dataclass(frozen=True)
class Requirement:
    """One parsed requirement; ``relative`` ones compare against the baseline config (``base``)."""

    text: str
    metric: str
    op: Op
    threshold: float
    """The absolute value, or δ of ``base ± δ``."""
    relative: bool

    @classmethod
    def parse(cls, text: str) -> Requirement:
        """``faithfulness>=0.7``, ``rouge_l>base+0.02``, ``ndcg >= base - 0.05``..."""
        match = _REQUIREMENT.match(text)
        if match is None:
            raise GateError(
                f"cannot read requirement {text!r}: write METRIC OP VALUE, OP one of >= > <= <, VALUE a number or "
                "base, base+0.02, base-0.05 (e.g. 'faithfulness>=0.7', 'rouge_l>base+0.02')"
            )
        metric = match["metric"]
        if metric not in ALL_METRICS:
            raise GateError(f"requirement {text!r}: unknown metric {metric!r}; known: {list(ALL_METRICS)}")
        op: Op = match["op"]  # type: ignore[assignment]
        if match["base"]:
            delta = float(match["delta"] or 0.0)
            threshold = -delta if match["sign"] == "-" else delta
            return cls(text.strip(), metric, op, threshold, relative=True)
        return cls(text.strip(), metric, op, float(match["value"]), relative=False)

    def holds(self, low: float, high: float, mean: float) -> bool:
        """The bound test on an estimate: absolute ones on ``mean``, relative ones on the CI's bounds."""
        if not self.relative:
            low = high = mean
        if self.op == ">":
            return low > self.threshold
        if self.op == ">=":
            return low >= self.threshold
        if self.op == "<":
            return high < self.threshold
        return high <= self.threshold

    @property
    def claims_difference(self) -> bool:
        """Whether passing says the candidate differs from the baseline (then Wilcoxon must detect it)."""
        if self.op in (">", ">="):
            return self.threshold > 0 or (self.op == ">" and self.threshold == 0)
        return self.threshold < 0 or (self.op == "<" and self.threshold == 0)


class GateOptions(BaseModel):
    """The gate's inputs besides the run (``POST /v1/evaluations/{id}/gate`` body, CLI options)."""

    model_config = ConfigDict(extra="forbid")

    require: list[str] = Field(min_length=1, max_length=100)
    """Requirements, e.g. ``["faithfulness>=0.7", "rouge_l>base+0.02"]``."""
    candidate: str | None = None
    """The config under test; default: the run's only config, or the second of two."""
    baseline: str | None = None
    """What ``base`` means; default: the run's first config."""
    max_failed_fraction: float = Field(default=0.1, ge=0.0, le=1.0)
    """Most failed samples (of those that should have scored) a required metric may have."""
    min_pairs: int = Field(default=5, ge=1)
    """Fewest paired samples a relative requirement accepts."""
    allow_unchecked_judge: bool = False
    """Accept judged metrics from a run without a judge check (``eval.judge_check`` off)."""


class GateCheck(BaseModel):
    """One requirement's outcome: what was measured, against what, and every reason it failed."""

    requirement: str
    metric: str
    kind: Literal["absolute", "relative"]
    config: str
    """The candidate config (``candidate − baseline`` for relative requirements)."""
    observed: float | None = None
    """The candidate's mean (absolute) or the mean paired difference (relative)."""
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    n: int = 0
    """Scored samples (absolute) or paired samples (relative)."""
    failed: str = ""
    """Failed samples, e.g. ``1/20`` (candidate; ``baseline: 0/20`` appended for relative requirements)."""
    judge: str | None = None
    """The judge's calibration agreement for judged metrics, e.g. ``0.85 [0.64, 0.95]``."""
    passed: bool
    reasons: list[str] = Field(default_factory=list)


class GateResult(BaseModel):
    """The gate's decision; serialises to JSON (``model_dump_json``) for pipelines and decision records."""

    run_id: str
    candidate: str
    baseline: str | None
    passed: bool
    checks: list[GateCheck]
    options: GateOptions

    def failures(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]

    def table(self) -> object:
        """A rich ``Table`` of the checks (one row per requirement)."""
        from rich.table import Table

        title = f"gate on run {self.run_id}: {self.candidate}" + (
            f" vs baseline {self.baseline}" if self.baseline else ""
        )
        table = Table(
            "requirement", "observed", "95 % CI", "p", "n", "failed", "judge", "result", title=title
        )
        for c in self.checks:
            signed = "+" if c.kind == "relative" else ""
            ci = (
                "–"
                if c.ci_low is None or c.ci_high is None
                else f"[{c.ci_low:{signed}.3f}, {c.ci_high:{signed}.3f}]"
            )
            observed = (
                "–"
                if c.observed is None
                else f"{c.observed:+.3f}"
                if c.kind == "relative"
                else f"{c.observed:.3f}"
            )
            p = "–" if c.p_value is None else f"{c.p_value:.3g}"
            verdict = "[green]pass[/green]" if c.passed else "[red]FAIL[/red]: " + "; ".join(c.reasons)
            table.add_row(c.requirement, observed, ci, p, str(c.n), c.failed, c.judge or "–", verdict)
        return table

    def render(self, width: int = 160) -> str:
        """The table as plain text (assertion messages, logs), with the overall outcome."""
        from rich.console import Console

        buffer = io.StringIO()
        console = Console(file=buffer, width=width, color_system=None, force_terminal=False)
        console.print(self.table())
        console.print(
            "gate passed" if self.passed else f"gate FAILED ({len(self.failures())} of {len(self.checks)})"
        )
        return buffer.getvalue()


class GateFailedError(AssertionError):
    """Raised by :func:`assert_gate`; the message is the gate's table, ``result`` the decision."""

    def __init__(self, result: GateResult) -> None:
        super().__init__(result.render())
        self.result = result


def _resolve_configs(summary: RunSummary, options: GateOptions, relative: bool) -> tuple[str, str | None]:
    names = [c.name for c in summary.configs] or list(summary.results)
    for name in (options.candidate, options.baseline):
        if name is not None and name not in summary.results:
            raise GateError(f"config {name!r} is not in run {summary.run_id} (configs: {names})")
    baseline = options.baseline or names[0]
    if options.candidate is not None:
        candidate = options.candidate
    elif len(names) == 1:
        candidate = names[0]
    elif len(names) == 2:
        candidate = names[1] if baseline == names[0] else names[0]
    else:
        raise GateError(f"run {summary.run_id} has {len(names)} configs {names}: name the candidate")
    if relative and candidate == baseline:
        raise GateError(
            f"relative requirements compare two configs, but candidate and baseline are both {candidate!r}"
            + ("" if len(names) > 1 else " (the run has one config: evaluate the baseline in the same run)")
        )
    return candidate, (baseline if relative or options.baseline else None)


def _failed_text(s: MetricSummary) -> str:
    return f"{s.n_failed}/{s.n_ok + s.n_failed}"


def _health(
    req: Requirement, summary: RunSummary, config: str, options: GateOptions, role: str
) -> tuple[MetricSummary | None, list[str]]:
    """The config's summary of the metric and what makes it unusable (nothing scored, too many failures)."""
    result = summary.results.get(config, {}).get(req.metric)
    if result is None:
        return None, [f"{req.metric} was not computed for {role} {config!r}"]
    reasons = []
    if result.n_ok == 0:
        reasons.append(
            f"no scored samples for {role}" + (f" ({result.n_skipped} skipped)" if result.n_skipped else "")
        )
    if result.failed_fraction > options.max_failed_fraction:
        reasons.append(
            f"too many failed samples for {role}: {_failed_text(result)} "
            f"({result.failed_fraction:.0%} > {options.max_failed_fraction:.0%})"
        )
    return result, reasons


def _judge_reasons(
    req: Requirement, summary: RunSummary, options: GateOptions
) -> tuple[str | None, list[str]]:
    if req.metric not in JUDGED_METRICS:
        return None, []
    check = summary.judge_check.metrics.get(req.metric) if summary.judge_check else None
    if check is None:
        if options.allow_unchecked_judge:
            return "not checked", []
        return "not checked", ["judge not checked for this metric (run with eval.judge_check on)"]
    if not check.reliable:
        return check.label(), [
            f"judge unreliable: calibration agreement {check.label().removesuffix(' judge unreliable')} "
            f"is not above chance {check.chance:.2f}"
        ]
    return check.label(), []


def _check(
    req: Requirement, summary: RunSummary, candidate: str, baseline: str | None, options: GateOptions
) -> GateCheck:
    result, reasons = _health(req, summary, candidate, options, "candidate")
    judge, judge_reasons = _judge_reasons(req, summary, options)
    reasons += judge_reasons
    check = GateCheck(
        requirement=req.text,
        metric=req.metric,
        kind="relative" if req.relative else "absolute",
        config=candidate if not req.relative else f"{candidate} − {baseline}",
        failed=_failed_text(result) if result else "",
        judge=judge,
        passed=False,
    )
    if not req.relative:
        if result is not None and result.mean is not None:
            check.observed, check.ci_low, check.ci_high, check.n = (
                result.mean,
                result.ci_low,
                result.ci_high,
                result.n_ok,
            )
            if not req.holds(result.mean, result.mean, result.mean):
                reasons.append(f"mean {result.mean:.3f} is not {req.op} {req.threshold:g}")
        check.reasons, check.passed = reasons, not reasons
        return check

    assert baseline is not None
    base_result, base_reasons = _health(req, summary, baseline, options, "baseline")
    reasons += base_reasons
    if base_result is not None:
        check.failed += f" (baseline {_failed_text(base_result)})"
    comparison = summary.comparison(baseline, candidate)
    delta: PairedDelta | None = comparison.delta(req.metric) if comparison else None
    if delta is None:
        reasons.append(
            f"no paired comparison of {candidate!r} with {baseline!r} on {req.metric} in the summary"
        )
    else:
        check.observed, check.ci_low, check.ci_high = delta.delta, delta.ci_low, delta.ci_high
        check.p_value, check.n = delta.p_value, delta.n_pairs
        if delta.n_pairs < options.min_pairs:
            reasons.append(f"too few paired samples: {delta.n_pairs} < {options.min_pairs}")
        elif delta.delta is not None and delta.ci_low is not None and delta.ci_high is not None:
            bound = f"base{req.threshold:+g}" if req.threshold else "base"
            if not req.holds(delta.ci_low, delta.ci_high, delta.delta):
                side = "lower" if req.op in (">", ">=") else "upper"
                value = delta.ci_low if side == "lower" else delta.ci_high
                reasons.append(
                    f"the paired 95 % CI's {side} bound {value:+.3f} is not {req.op} {req.threshold:+g} "
                    f"(needs {req.metric} {req.op} {bound} with 95 % confidence)"
                )
            elif req.claims_difference and (delta.p_value is None or delta.p_value >= ALPHA):
                reasons.append(f"Wilcoxon p={delta.p_value:.3g} ≥ {ALPHA}: the difference is not detectable")
    check.reasons, check.passed = reasons, not reasons
    return check


def evaluate_gate(
    summary: RunSummary, options: GateOptions | Sequence[str], **overrides: object
) -> GateResult:
    """Check every requirement against ``summary``; never raises for a failing requirement (see ``passed``).

    Args:
        summary: a run's summary (``summary.json``, or ``GET /v1/evaluations/{id}/results``'s ``summary``).
        options: :class:`GateOptions`, or just the requirement strings.
        overrides: :class:`GateOptions` fields (``candidate="acme"``, ``max_failed_fraction=0.05``...).

    Raises:
        GateError: a requirement cannot be read, an option is invalid, or a config is unknown or ambiguous.
    """
    fields = options.model_dump() if isinstance(options, GateOptions) else {"require": list(options)}
    try:
        opts = GateOptions.model_validate({**fields, **overrides})
    except ValueError as exc:
        raise GateError(f"gate options: {exc}") from exc
    parsed = [Requirement.parse(text) for text in opts.require]
    candidate, baseline = _resolve_configs(summary, opts, any(r.relative for r in parsed))
    checks = [_check(r, summary, candidate, baseline, opts) for r in parsed]
    return GateResult(
        run_id=summary.run_id,
        candidate=candidate,
        baseline=baseline,
        passed=all(c.passed for c in checks),
        checks=checks,
        options=opts,
    )


def assert_gate(run: RunSummary | Path | str, *requirements: str, **options: object) -> GateResult:
    """Fail the calling (pytest) test with the gate's table unless every requirement holds.

    Example:
        >>> from eval import assert_gate
        >>> def test_adapter_beats_base(tmp_path):
        ...     run_dir = ...  # ragswap eval run ... --out run_dir
        ...     assert_gate(run_dir, "faithfulness>=0.7", "rouge_l>base+0.02", candidate="acme")

    Args:
        run: a run directory (its ``summary.json``) or a :class:`RunSummary`.
        requirements: as for ``ragswap eval gate --require``.
        options: :class:`GateOptions` fields (``candidate``, ``baseline``, ``max_failed_fraction``...).

    Raises:
        GateFailedError: (an ``AssertionError``) when a requirement fails; its message is the table.
    """
    from eval.runner import read_summary

    summary = run if isinstance(run, RunSummary) else read_summary(Path(run))
    result = evaluate_gate(summary, list(requirements), **options)
    if not result.passed:
        raise GateFailedError(result)
    return result
