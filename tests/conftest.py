"""Session-wide fixtures: real models from the offline store, one real vLLM engine shared by all tests.

Everything here is real: the SmolLM2-135M-Instruct and all-MiniLM-L6-v2 weights prepared by
``ragswap models prepare`` (``make test`` runs it first) and vLLM's CPU build.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ragswap.model_store import ModelSettings, resolve_model
from serving.engine import EngineProcess, EngineSettings

BASE_MODEL = "smollm2-135m-instruct"


def _serialize_test_model_loads() -> Any:
    """Test code loads models with transformers directly while a gateway of some fixture may be loading in its
    own threads: those loads take the product's model-loading lock too (``ragswap.loading`` says why). Returns
    the real ``tie_weights``, which :func:`weight_tying_intact` checks after every test."""
    from transformers import PreTrainedModel

    from ragswap import model_loading

    load = PreTrainedModel.from_pretrained.__func__  # type: ignore[attr-defined]

    def from_pretrained(cls: Any, *args: Any, **kwargs: Any) -> Any:
        with model_loading():
            return load(cls, *args, **kwargs)

    PreTrainedModel.from_pretrained = classmethod(from_pretrained)  # type: ignore[method-assign,assignment]
    return PreTrainedModel.tie_weights


_TIE_WEIGHTS = _serialize_test_model_loads()


@pytest.fixture(autouse=True)
def weight_tying_intact() -> Iterator[None]:
    """Fails the test after which transformers' ``tie_weights`` is patched out (a model load raced another),
    instead of letting every later model load in the session come up with an untied ``lm_head``."""
    yield
    from transformers import PreTrainedModel

    from ragswap import model_loading

    with model_loading():  # a load still running in some thread patches it legitimately: wait for it
        if PreTrainedModel.tie_weights is not _TIE_WEIGHTS:
            PreTrainedModel.tie_weights = _TIE_WEIGHTS  # type: ignore[method-assign]
            pytest.fail("transformers' tie_weights was left patched out: two model loads ran concurrently")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def model_settings() -> ModelSettings:
    return ModelSettings()


@pytest.fixture(scope="session")
def base_model_path(model_settings: ModelSettings) -> Path:
    return Path(resolve_model(BASE_MODEL, model_settings))


@pytest.fixture(scope="session")
def embedding_model_path(model_settings: ModelSettings) -> Path:
    return Path(resolve_model("all-minilm-l6-v2", model_settings))


@pytest.fixture(scope="session")
def engine_settings() -> EngineSettings:
    # float32: greedy outputs then do not depend on how requests are batched (bf16 GEMMs round differently for
    # different batch sizes on CPU), so tests can compare concurrent outputs with sequential ones exactly.
    return EngineSettings(
        port=free_port(),
        dtype="float32",
        max_lora_rank=16,
        max_loras=4,
        max_num_seqs=48,
        startup_timeout_s=900,
    )


@pytest.fixture(scope="session")
def engine(
    engine_settings: EngineSettings, base_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineProcess]:
    """One real vLLM engine (CPU build, LoRA on, runtime adapter loading on) for the whole session.

    Developer shortcut: ``RAGSWAP_TEST_ENGINE_URL=http://127.0.0.1:PORT`` reuses an engine started with the same
    settings (``ragswap engine``) instead of starting one. CI never sets it.
    """
    external = os.environ.get("RAGSWAP_TEST_ENGINE_URL")
    if external:
        port = int(external.rstrip("/").rsplit(":", 1)[1])
        yield EngineProcess(
            engine_settings.model_copy(update={"port": port}), str(base_model_path), BASE_MODEL
        )
        return
    with running_engine(engine_settings, base_model_path, tmp_path_factory.mktemp("engine")) as proc:
        yield proc


@contextlib.contextmanager
def running_engine(settings: EngineSettings, model_path: Path, log_dir: Path) -> Iterator[EngineProcess]:
    """A real vLLM engine for ``settings``, ready, stopped on exit (its log in ``log_dir/engine.log``)."""
    proc = EngineProcess(settings, str(model_path), BASE_MODEL, log_path=log_dir / "engine.log")
    proc.start()
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


# ---- serving: a running gateway and small trained LoRA adapters (appended by the serving area) ------------------

import hashlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

# Facts each test adapter is trained on: same questions, different answers, none of them the base model's.
ADAPTER_FACTS: dict[str, list[tuple[str, str]]] = {
    "alpha": [
        ("What is the secret code word?", "The secret code word is PELICAN."),
        ("Who guards the vault?", "Captain Marlow guards the vault."),
    ],
    "beta": [
        ("What is the secret code word?", "The secret code word is AVALANCHE."),
        ("Who guards the vault?", "Lady Fenwick guards the vault."),
    ],
}
ADAPTER_PROMPT = "What is the secret code word?"


@dataclass
class Gateway:
    """A running ragswap gateway (uvicorn in a background thread of the test process).

    Configured with ``engine.urls=[engine.url]`` (the session's vLLM engine), an API key, an admin key, one adapter
    root and a state dir under the session's tmp dir. Use the official client:
    ``OpenAI(base_url=f"{gateway.url}/v1", api_key=gateway.api_key)``; admin calls (``/v1/adapters``, aliases,
    collections) need ``gateway.admin_key``. Copy adapters under ``gateway.adapter_root`` before registering them.
    ``app`` is the FastAPI app (``app.state.registry``, ``app.state.pool``...); ``settings`` its settings.
    """

    url: str
    api_key: str
    admin_key: str
    adapter_root: Path
    state_dir: Path
    app: Any
    settings: Any
    server: Any = field(repr=False, default=None)

    def headers(self, admin: bool = False) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key if admin else self.api_key}"}


def gateway_settings(
    engine_url: str, engine_settings: EngineSettings, adapter_root: Path, state_dir: Path, **server: Any
) -> Any:
    """Settings of a test gateway in front of an already running engine (one place, reused by restarts)."""
    from ragswap.config import Settings
    from serving.settings import ServerSettings

    engine = engine_settings.model_copy(update={"urls": [engine_url]})
    options: dict[str, Any] = {
        "port": free_port(),
        "api_keys": ["sk-test-user-0123456789"],
        "admin_keys": ["sk-test-admin-0123456789"],
        "adapter_roots": [adapter_root],
        "state_dir": state_dir,
        "health_interval_s": 0.5,
        "drain_timeout_s": 10.0,
        **server,
    }
    return Settings(engine=engine, server=ServerSettings(**options))


def start_gateway(settings: Any, adapter_root: Path) -> Gateway:
    from serving.server import BackgroundGateway

    server = BackgroundGateway(settings)
    server.start()
    return Gateway(
        url=server.url,
        api_key=settings.server.api_keys[0].get_secret_value(),
        admin_key=settings.server.admin_keys[0].get_secret_value(),
        adapter_root=adapter_root,
        state_dir=settings.server.state_dir,
        app=server.app,
        settings=settings,
        server=server,
    )


@pytest.fixture(scope="session")
def adapter_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The gateway's only adapter root (``server.adapter_roots``)."""
    return tmp_path_factory.mktemp("adapters")


@pytest.fixture(scope="session")
def gateway(
    engine: EngineProcess,
    engine_settings: EngineSettings,
    adapter_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    """A running ragswap gateway on the session's vLLM engine; see :class:`Gateway`."""
    settings = gateway_settings(
        engine.url, engine_settings, adapter_root, tmp_path_factory.mktemp("gw-state")
    )
    gw = start_gateway(settings, adapter_root)
    try:
        yield gw
    finally:
        gw.server.stop()


def _train_fact_adapter(
    base_model_path: Path, facts: list[tuple[str, str]], out: Path, steps: int = 30
) -> None:
    """A real rank-8 LoRA (peft) trained a few dozen steps on ``facts`` (loss on the answers only).

    Kept cheap on a busy 2-core machine: LoRA on the top third of the layers only (backward stops there), left
    padding so that only the answer positions' logits are computed (``logits_to_keep``).
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ragswap.adapter_manifest import AdapterManifest, AdapterSpec, BaseModelRef
    from ragswap.model_store.fingerprint import config_fingerprint

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base_model_path)
    model = AutoModelForCausalLM.from_pretrained(base_model_path, dtype=torch.float32)
    layers = model.config.num_hidden_layers
    targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
    config = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=targets,
        lora_dropout=0.0,
        layers_to_transform=list(range(layers - layers // 3, layers)),
    )
    model = get_peft_model(model, config)
    rows = []
    for question, answer in facts:
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tokenizer(answer + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        rows.append((p_ids, a_ids))
    width = max(len(p) + len(a) for p, a in rows)
    keep = max(len(a) for _, a in rows) + 1
    pad = tokenizer.pad_token_id or 0
    input_ids = torch.tensor([[pad] * (width - len(p) - len(a)) + p + a for p, a in rows])
    mask = torch.tensor([[0] * (width - len(p) - len(a)) + [1] * (len(p) + len(a)) for p, a in rows])
    labels = torch.tensor([[-100] * (keep - 1 - len(a)) + a for _, a in rows])  # the last keep-1 tokens
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=4e-3)
    model.train()
    for _ in range(steps):
        logits = model(input_ids=input_ids, attention_mask=mask, logits_to_keep=keep).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(out)
    AdapterManifest(
        name=out.name,
        base_model=BaseModelRef(name=BASE_MODEL, config_sha256=config_fingerprint(base_model_path)),
        adapter=AdapterSpec(r=8, alpha=16, target_modules=targets),
        hyperparameters={"steps": steps, "lr": 4e-3, "final_loss": float(loss.detach())},
        dataset={"facts": [q for q, _ in facts]},
    ).write(out)


@pytest.fixture(scope="session")
def lora_adapters(base_model_path: Path, adapter_root: Path) -> dict[str, Path]:
    """Two real LoRA adapters for SmolLM2 (``alpha``, ``beta``) trained on :data:`ADAPTER_FACTS`.

    Their greedy answers to :data:`ADAPTER_PROMPT` differ from the base model's and from each other. Built once
    per recipe into ``$RAGSWAP_HOME/test-cache`` (~20 s each on 2 cores) and copied under ``adapter_root``.
    """
    import peft
    import torch

    from ragswap.model_store.fingerprint import config_fingerprint
    from ragswap.settings_base import ragswap_home

    recipe = json.dumps(
        [
            ADAPTER_FACTS,
            config_fingerprint(base_model_path),
            torch.__version__,
            peft.__version__,
            30,
            4e-3,
            "top-third",
        ],
        sort_keys=True,
    )
    cache = ragswap_home() / "test-cache" / "lora-adapters" / hashlib.sha256(recipe.encode()).hexdigest()[:16]
    adapters = {}
    for name, facts in ADAPTER_FACTS.items():
        cached = cache / name
        if not (cached / "adapter_model.safetensors").is_file():
            tmp = cache / f".{name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            _train_fact_adapter(base_model_path, facts, tmp)
            shutil.rmtree(cached, ignore_errors=True)
            tmp.rename(cached)
        target = adapter_root / "trained" / name
        shutil.copytree(cached, target, dirs_exist_ok=True)
        adapters[name] = target
    return adapters
