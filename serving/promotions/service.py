"""Evaluation-gated promotion: evaluate a candidate against an alias's current target on the same samples (an
evaluation job of the control plane, run by the evaluation worker), apply ``eval``'s gate (paired statistics; an
unreliable judge or too many failed samples fail it), and move the alias's weight only if it passes — at once or
stepwise. With ``step_interval_s``, each step is a soak: the candidate serves its share while this gateway's
per-version counters compare its 5xx rate and latency with the baseline's over the same window, and a regression
moves the alias back to the targets it had before the promotion at once (``reverted``). Every decision, passed or
not, is recorded in the alias's history with its inputs.

The soak sees the traffic of the gateway that runs the promotion only: behind a load balancer over N gateways it
judges about 1/N of the requests (the counts are in the verdict).

A promotion runs as a task of the gateway that started it; its evaluation job is durable (a worker resumes it),
the promotion's own progress is not: a gateway restarted mid-promotion leaves the alias as it was and the job's
results unused (start the promotion again).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from contextlib import suppress
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from serving.controlplane import db_call
from serving.errors import BadRequestError, ConflictError, NotFoundError
from serving.evaluations import EvaluationCreate, EvaluationService
from serving.ops.metrics import GatewayMetrics, VersionStats
from serving.promotions.protocol import PromotionCreate, PromotionPublic, SoakWatch

if TYPE_CHECKING:
    from serving.adapters.registry import AdapterRegistry

logger = logging.getLogger(__name__)

POLL_S = 0.5
Targets = list[tuple[str, int]]
"""An alias's weighted targets, ``(name@version, percent)``."""
SOAK_CHECK_S = 1.0
"""How often a soak looks at the counters (it stops at the first regression)."""
FINAL = ("succeeded", "failed", "cancelled")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def dataset_sha256(rows: list[dict[str, Any]]) -> str:
    """The hash the decision records: of the rows as canonical JSON (key order and spacing do not matter)."""
    canonical = json.dumps(rows, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _window(stats: VersionStats) -> dict[str, Any]:
    mean = stats.mean_latency_s
    return {
        "requests": int(stats.requests),
        "server_errors": int(stats.server_errors),
        "answered": int(stats.answered),
        "mean_latency_s": None if mean is None else round(mean, 4),
    }


def soak_verdict(candidate: VersionStats, baseline: VersionStats, watch: SoakWatch) -> dict[str, Any]:
    """Judge one soak window: ``regressed`` (with ``reasons``) when the candidate's 5xx rate exceeds the baseline's
    by more than ``max_error_rate_delta`` or its mean latency is over ``max_latency_ratio`` times the baseline's;
    ``insufficient_traffic`` while the candidate has fewer than ``min_requests`` requests; else ``passed``."""
    record: dict[str, Any] = {"candidate": _window(candidate), "baseline": _window(baseline)}
    if candidate.requests < watch.min_requests:
        return {**record, "verdict": "insufficient_traffic", "reasons": []}
    reasons = []
    rate, base_rate = candidate.error_rate or 0.0, baseline.error_rate or 0.0
    if rate - base_rate > watch.max_error_rate_delta:
        reasons.append(
            f"5xx rate {rate:.1%} vs {base_rate:.1%} for the baseline "
            f"(+{rate - base_rate:.1%} > {watch.max_error_rate_delta:.1%})"
        )
    mean, base_mean = candidate.mean_latency_s, baseline.mean_latency_s
    if (
        watch.max_latency_ratio is not None
        and mean is not None
        and base_mean
        and min(candidate.answered, baseline.answered) >= watch.min_requests
        and mean / base_mean > watch.max_latency_ratio
    ):
        reasons.append(
            f"mean latency {mean:.3f} s vs {base_mean:.3f} s for the baseline "
            f"(×{mean / base_mean:.2f} > ×{watch.max_latency_ratio:g})"
        )
    return {**record, "verdict": "regressed" if reasons else "passed", "reasons": reasons}


class PromotionService:
    """Starts promotions and keeps their state while they run (the decisions themselves live in the database)."""

    def __init__(
        self, registry: AdapterRegistry, evaluations: EvaluationService, metrics: GatewayMetrics
    ) -> None:
        self.registry = registry
        self.evaluations = evaluations
        self.metrics = metrics
        self._promotions: dict[str, PromotionPublic] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, alias: str, body: PromotionCreate, actor: str | None) -> PromotionPublic:
        """Validate, queue the evaluation job, and return the promotion (``evaluating``) while it runs."""
        from eval import GateError, Requirement

        record = self.registry.aliases().get(alias)
        if record is None:
            raise NotFoundError(f"alias `{alias}` does not exist", param="alias", code="alias_not_found")
        candidate = self.registry.snapshot.get(body.candidate)
        if candidate is None:
            raise NotFoundError(
                f"candidate `{body.candidate}` is not a registered adapter",
                param="candidate",
                code="adapter_not_found",
            )
        baseline = record.target
        if candidate.ref == baseline:
            raise ConflictError(
                f"`{candidate.ref}` already is the target of `{alias}`",
                param="candidate",
                code="already_target",
            )
        try:
            for requirement in body.require:
                Requirement.parse(requirement)
        except GateError as exc:
            raise BadRequestError(str(exc), param="require", code="invalid_gate") from exc
        job = await self.evaluations.create(
            EvaluationCreate(
                dataset=body.dataset,
                name=f"{body.dataset_name}: {candidate.ref} vs {baseline}",
                adapters=[baseline, candidate.ref],
                collection=body.collection,
                metrics=body.metric_names(),
                judge=body.judge,
            ),
            created_by=actor,
        )
        promotion = PromotionPublic(
            id=f"promo-{uuid.uuid4().hex[:12]}",
            alias=alias,
            candidate=candidate.ref,
            baseline=baseline,
            status="evaluating",
            steps=body.steps,
            evaluation_id=job.id,
            dataset_sha256=dataset_sha256(body.dataset),
            created_by=actor,
            created_at=_now(),
        )
        self._promotions[promotion.id] = promotion
        before = [(t.ref, t.weight) for t in record.targets]
        task = asyncio.create_task(self._run(promotion, body, before), name=f"ragswap-{promotion.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        logger.info(
            "promotion started",
            extra={"promotion": promotion.id, "alias": alias, "candidate": candidate.ref, "job": job.id},
        )
        return promotion

    def get(self, alias: str, promotion_id: str) -> PromotionPublic:
        promotion = self._promotions.get(promotion_id)
        if promotion is None or promotion.alias != alias:
            raise NotFoundError(
                f"promotion `{promotion_id}` of `{alias}` is not known to this gateway (decided ones are in the "
                "alias's history)",
                param="id",
                code="promotion_not_found",
            )
        return promotion

    def list(self, alias: str) -> list[PromotionPublic]:
        return [p for p in self._promotions.values() if p.alias == alias]

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    def _update(self, promotion: PromotionPublic, **changes: Any) -> PromotionPublic:
        updated = promotion.model_copy(update=changes)
        self._promotions[promotion.id] = updated
        return updated

    async def _run(self, promotion: PromotionPublic, body: PromotionCreate, before: Targets) -> None:
        try:
            await self._decide(promotion, body, before)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # recorded, never raised: nobody awaits the task
            logger.exception("promotion failed", extra={"promotion": promotion.id})
            current = self._promotions[promotion.id]
            self._update(current, status="failed", error=str(exc), finished_at=_now())
            with suppress(Exception):
                await self._record(current, "alias.promotion_failed", None, error=str(exc))

    async def _decide(self, promotion: PromotionPublic, body: PromotionCreate, before: Targets) -> None:
        from eval import GateError, GateOptions, evaluate_gate

        assert promotion.evaluation_id is not None
        job = await self.evaluations.get(promotion.evaluation_id)
        while job.status not in FINAL:
            await asyncio.sleep(POLL_S)
            job = await self.evaluations.get(promotion.evaluation_id)
        if job.status != "succeeded":
            raise RuntimeError(f"evaluation {job.id} {job.status}" + (f": {job.error}" if job.error else ""))
        summary = (await self.evaluations.results(job.id, False)).summary
        options = GateOptions(
            require=body.require,
            candidate=promotion.candidate,
            baseline=promotion.baseline,
            max_failed_fraction=body.max_failed_fraction,
            min_pairs=body.min_pairs,
            allow_unchecked_judge=body.allow_unchecked_judge,
        )
        try:
            gate = await asyncio.to_thread(evaluate_gate, summary, options)
        except GateError as exc:
            raise RuntimeError(f"the gate cannot be evaluated: {exc}") from exc
        decision = gate.model_dump(mode="json")
        promotion = self._update(promotion, decision=decision)
        if not gate.passed:
            failing = [c.requirement for c in gate.failures()]
            await self._record(promotion, "alias.promotion_rejected", body.reason, failed=failing)
            self._update(promotion, status="rejected", finished_at=_now())
            logger.info("promotion rejected", extra={"promotion": promotion.id, "failed": failing})
            return
        promotion = self._update(promotion, status="promoting")
        for index, weight in enumerate(body.steps):
            if index and body.step_interval_s:
                soak = await self._soak(promotion, body.soak, body.step_interval_s)
                promotion = self._update(promotion, soaks=[*promotion.soaks, soak])
                if soak["verdict"] == "regressed":
                    await self._revert(promotion, before, soak)
                    return
            split = (
                [(promotion.candidate, 100)]
                if weight == 100
                else [(promotion.candidate, weight), (promotion.baseline, 100 - weight)]
            )
            await self.registry.set_alias(
                promotion.alias,
                split,
                self.registry.aliases()[promotion.alias].default_collection,
                actor=promotion.created_by,
                reason=body.reason or f"promotion {promotion.id}: {promotion.candidate} at {weight} %",
                kind="alias.promoted",
                details={"promotion": self._decision_record(promotion, step=weight)},
            )
            promotion = self._update(promotion, step=weight)
        self._update(promotion, status="promoted", finished_at=_now())
        logger.info("promotion done", extra={"promotion": promotion.id, "alias": promotion.alias})

    async def _soak(self, promotion: PromotionPublic, watch: SoakWatch, seconds: float) -> dict[str, Any]:
        """Watch the candidate against the baseline for ``seconds`` at the current step; stop at a regression."""
        alias, candidate, baseline = promotion.alias, promotion.candidate, promotion.baseline
        start_candidate = self.metrics.version_stats(alias, candidate)
        start_baseline = self.metrics.version_stats(alias, baseline)
        started = time.monotonic()
        deadline = started + seconds
        while True:
            await asyncio.sleep(max(0.0, min(SOAK_CHECK_S, deadline - time.monotonic())))
            verdict = soak_verdict(
                self.metrics.version_stats(alias, candidate) - start_candidate,
                self.metrics.version_stats(alias, baseline) - start_baseline,
                watch,
            )
            if verdict["verdict"] == "regressed" or time.monotonic() >= deadline:
                seconds_watched = round(time.monotonic() - started, 1)
                logger.info(
                    "promotion soak",
                    extra={"promotion": promotion.id, "step": promotion.step, **verdict},
                )
                return {"step": promotion.step, "seconds": seconds_watched, **verdict}

    async def _revert(self, promotion: PromotionPublic, before: Targets, soak: dict[str, Any]) -> None:
        """Move the alias back to the targets it had before the promotion (one transaction), recorded."""
        why = "; ".join(soak["reasons"])
        await self.registry.set_alias(
            promotion.alias,
            before,
            self.registry.aliases()[promotion.alias].default_collection,
            actor=promotion.created_by,
            reason=f"promotion {promotion.id}: {promotion.candidate} reverted at {promotion.step} %: {why}",
            kind="alias.promotion_reverted",
            details={"promotion": self._decision_record(promotion, step=promotion.step, soak=soak)},
        )
        self._update(promotion, status="reverted", error=f"soak regression: {why}", finished_at=_now())
        logger.warning("promotion reverted", extra={"promotion": promotion.id, "reasons": soak["reasons"]})

    @staticmethod
    def _decision_record(promotion: PromotionPublic, **extra: Any) -> dict[str, Any]:
        """What the history keeps: who, when, the inputs (dataset hash, job id, requirements) and the deltas."""
        decision = promotion.decision or {}
        return {
            "id": promotion.id,
            "candidate": promotion.candidate,
            "baseline": promotion.baseline,
            "requested_by": promotion.created_by,
            "requested_at": promotion.created_at,
            "decided_at": _now(),
            "evaluation_id": promotion.evaluation_id,
            "dataset_sha256": promotion.dataset_sha256,
            "steps": promotion.steps,
            "passed": decision.get("passed"),
            "options": decision.get("options"),
            "checks": decision.get("checks", []),
            "soaks": promotion.soaks,
            **extra,
        }

    async def _record(self, promotion: PromotionPublic, kind: str, reason: str | None, **extra: Any) -> None:
        plane = self.registry.plane
        await db_call(
            plane,
            plane.registry.record_alias_decision,
            promotion.alias,
            kind,
            actor=promotion.created_by,
            reason=reason or f"promotion {promotion.id} of {promotion.candidate}",
            promotion=self._decision_record(promotion, **extra),
        )
