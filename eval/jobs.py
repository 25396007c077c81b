"""One evaluation request → a prepared run (configs, judge, scorer, platform client); shared by CLI and API."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, model_validator

from eval.records import EvalSample, RunConfig, RunSummary
from eval.runner import Pace, ProgressCallback, RunSpec, TraceSink, execute_run, new_run_id
from eval.settings import ALL_METRICS, EvalSettings

if TYPE_CHECKING:
    from eval.scoring import JudgeConfig
    from ragswap import Settings

RetrievalMode = Literal["hybrid", "dense", "sparse"]


class EvalRequest(BaseModel):
    """What to evaluate: samples × (adapters × retrieval modes), which metrics, which judge."""

    dataset_name: str = "inline"
    samples: list[EvalSample] = Field(min_length=1)
    adapters: list[str] = Field(default_factory=list)
    """Models/adapters to compare; empty = the base model."""
    collection: str | None = None
    retrieval_modes: list[RetrievalMode] = Field(default_factory=list)
    top_k: int | None = Field(default=None, ge=1, le=100)
    rerank: bool | None = None
    metrics: list[str] | None = None
    judge_url: str | None = None
    judge_model: str | None = None
    structured_output: bool | None = None
    score_only: bool = False
    """Score the samples' own ``response``/``retrieved_contexts``; generate nothing."""

    @model_validator(mode="after")
    def _check(self) -> EvalRequest:
        if self.metrics is not None:
            unknown = sorted(set(self.metrics) - set(ALL_METRICS))
            if unknown:
                raise ValueError(f"metrics: unknown {unknown}; known: {list(ALL_METRICS)}")
            if not self.metrics:
                raise ValueError("metrics: give at least one metric")
        if self.score_only:
            missing = next((s.id for s in self.samples if s.response is None and not s.responses), None)
            if missing is not None:
                raise ValueError(f"score_only: sample {missing!r} has no response")
        if len(set(self.adapters)) != len(self.adapters):
            raise ValueError("adapters: listed twice")
        return self

    def given_models(self) -> list[str]:
        """The models whose answers the samples hold (``responses``), in order of first appearance (a shadow
        capture: the served version, then the candidate)."""
        seen: dict[str, None] = {}
        for sample in self.samples:
            seen.update(dict.fromkeys(sample.responses or {}))
        return list(seen)

    def configs(self, base_model: str) -> list[RunConfig]:
        """Every adapter × every retrieval mode, named ``adapter`` or ``adapter/mode``."""
        models = self.adapters or self.given_models() or [base_model]
        modes: list[RetrievalMode | None] = list(self.retrieval_modes) or [None]
        configs = []
        for model in models:
            for mode in modes:
                name = model if len(modes) == 1 else f"{model}/{mode}"
                configs.append(
                    RunConfig(
                        name=name,
                        model=model,
                        collection=self.collection,
                        retrieval_mode=mode,
                        top_k=self.top_k,
                        rerank=self.rerank,
                    )
                )
        return configs


@dataclass
class PreparedRun:
    """A run ready to execute; ``execute`` builds the judge and clients, runs, and closes them."""

    spec: RunSpec
    run_dir: Path
    server_url: str
    api_key: str | None
    judge_url: str
    judge_model: str
    judge_api_key: str | None
    score_only: bool
    settings: EvalSettings
    asgi_app: Any | None = None
    """The gateway app itself when the API runs the job: calls to it stay in-process."""
    judge_via_gateway: bool = True
    judge_tokenizer: Path | None = None
    """The judge model's tokenizer when it is in the local model store (exact prompt budgets)."""
    embedding_path: Path | None = None
    """The embedding model, resolved from the settings when a metric needs it."""

    async def execute(
        self,
        progress: ProgressCallback | None = None,
        sink: TraceSink | None = None,
        pace: Pace | None = None,
    ) -> RunSummary:
        """Run it; traces go to ``sink`` when given (and then no run directory is written); ``pace`` is awaited
        before each sample (see :data:`eval.runner.Pace`)."""
        from eval.platform import PlatformClient
        from eval.scoring import JudgeConfig, build_scorer

        settings = self.settings
        judge = JudgeConfig.from_settings(
            settings, self.judge_url, self.judge_model, self.judge_api_key, self.judge_tokenizer
        )
        judge.structured_output = self.spec.judge.structured_output
        scorer = build_scorer(
            self.spec.metrics,
            judge,
            self.embedding_path,
            k=self.spec.k,
            strictness=settings.answer_relevancy_strictness,
            judge_asgi_app=self.asgi_app if self.judge_via_gateway else None,
        )
        platform = None
        if not self.score_only:
            platform = PlatformClient(
                self.server_url,
                self.api_key,
                max_tokens=settings.generation_max_tokens,
                default_top_k=self.spec.k,
                asgi_app=self.asgi_app,
            )
        try:
            return await execute_run(
                self.spec,
                None if sink is not None else self.run_dir,
                scorer,
                platform,
                concurrency=settings.generation_concurrency,
                progress=progress,
                sink=sink,
                pace=pace,
            )
        finally:
            if platform is not None:
                await platform.close()
            scorer.close()


def prepare_run(
    request: EvalRequest,
    settings: Settings,
    *,
    server_url: str | None = None,
    api_key: str | None = None,
    out: Path | None = None,
    run_id: str | None = None,
    asgi_app: Any | None = None,
) -> PreparedRun:
    """Resolve defaults from the settings (judge = the gateway and its base model) into a :class:`PreparedRun`.

    ``settings`` are the entry point's (CLI command, worker): nothing here reads the configuration again.
    """
    from eval.embeddings import default_embedding_path
    from eval.records import JudgeInfo
    from eval.scoring import needs_embeddings

    server_url = server_url or f"http://{settings.server.host}:{settings.server.port}"
    if api_key is None and settings.server.api_keys:
        api_key = settings.server.api_keys[0].get_secret_value()
    judge_url, judge_model, judge_key, via_gateway = resolve_judge(
        settings, server_url, api_key, request.judge_url, request.judge_model
    )
    structured = (
        request.structured_output
        if request.structured_output is not None
        else settings.eval.structured_output
    )
    run_id = run_id or new_run_id()
    spec = RunSpec(
        run_id=run_id,
        dataset=request.dataset_name,
        samples=request.samples,
        configs=request.configs(settings.models.base_model),
        metrics=request.metrics or list(settings.eval.metrics),
        judge=JudgeInfo(url=judge_url, model=judge_model, structured_output=structured),
        k=request.top_k or settings.eval.k,
        bootstrap_samples=settings.eval.bootstrap_samples,
    )
    return PreparedRun(
        spec=spec,
        run_dir=out or settings.eval.runs_dir / run_id,
        server_url=server_url,
        api_key=api_key,
        judge_url=judge_url,
        judge_model=judge_model,
        judge_api_key=judge_key,
        score_only=request.score_only,
        settings=settings.eval,
        asgi_app=asgi_app,
        judge_via_gateway=via_gateway,
        judge_tokenizer=judge_tokenizer_dir(judge_model, settings),
        embedding_path=default_embedding_path(settings.models) if needs_embeddings(spec.metrics) else None,
    )


def resolve_judge(
    settings: Settings, server_url: str, api_key: str | None, judge_url: str | None, judge_model: str | None
) -> tuple[str, str, str | None, bool]:
    """``(url, model, api key, via the gateway)`` of the judge: the given ones, else the settings', else the
    gateway at ``server_url`` with its base model (and the gateway's API key)."""
    url = judge_url or settings.eval.judge_url or server_url
    model = judge_model or settings.eval.judge_model or settings.models.base_model
    key = settings.eval.judge_api_key.get_secret_value() if settings.eval.judge_api_key else None
    via_gateway = not (judge_url or settings.eval.judge_url)
    if via_gateway:
        key = key or api_key
    return url, model, key, via_gateway


def judge_config(
    settings: Settings,
    *,
    server_url: str | None = None,
    api_key: str | None = None,
    judge_url: str | None = None,
    judge_model: str | None = None,
    structured_output: bool | None = None,
) -> JudgeConfig:
    """The judge a run with these options would use (``ragswap eval judge-check`` checks it alone)."""
    from eval.scoring import JudgeConfig

    server_url = server_url or f"http://{settings.server.host}:{settings.server.port}"
    if api_key is None and settings.server.api_keys:
        api_key = settings.server.api_keys[0].get_secret_value()
    url, model, key, _ = resolve_judge(settings, server_url, api_key, judge_url, judge_model)
    config = JudgeConfig.from_settings(settings.eval, url, model, key, judge_tokenizer_dir(model, settings))
    if structured_output is not None:
        config.structured_output = structured_output
    return config


def judge_tokenizer_dir(judge_model: str, settings: Settings) -> Path | None:
    """The judge's tokenizer folder when ``judge_model`` is a model-store name or a local model directory."""
    from eval.budget import local_tokenizer_dir
    from ragswap import ModelStoreError, resolve_model

    try:
        return local_tokenizer_dir(resolve_model(judge_model, settings.models))
    except (ModelStoreError, OSError):
        return None
