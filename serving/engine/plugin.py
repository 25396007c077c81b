"""vLLM general plugin (entry point ``vllm.general_plugins: ragswap_lora_ops``).

vLLM calls :func:`register` once in every process that builds or runs the engine: the API-server process
(``EngineArgs`` loads general plugins before it builds the engine config), the engine-core and the worker
processes. On the CPU platform it

- swaps vLLM's ``PunicaWrapperCPU`` for ragswap's grouped implementation (faster, and correct for base requests
  batched with adapter requests: see :mod:`serving.engine.grouped_lora`). vLLM resolves the wrapper class by its
  qualified name at model load, after plugins ran, so replacing the module attribute is enough;
- lets the engine keep its compilation mode when LoRA is enabled (:func:`keep_compilation_with_lora`): vLLM's CPU
  platform switches compilation off whenever a LoRA config exists, because its reference LoRA ops are data
  dependent Python; ragswap's are opaque custom ops under ``torch.compile``, so dynamo can trace the rest;
- lets the engine load its compiled model from vLLM's AOT cache (:func:`load_inductor_aot_artifacts`) instead of
  compiling it again at every start.

Nothing is edited on disk. The patches are verified for vLLM 0.32.0 and refused loudly on another release.
``RAGSWAP_LORA_OPS=reference`` keeps vLLM's own ops and, with them, its eager-only LoRA execution (used by
benchmarks and tests to compare against them).

In an engine ragswap started, the plugin first ties the process's life to its parent's
(:func:`serving.engine.lifeline.die_with_mp_parent`): an ``EngineCore`` or ``Worker`` process dies with the process
that started it instead of running on as an orphan.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
from typing import Any

logger = logging.getLogger(__name__)

#: The vLLM release the grouped ops were checked against (wrapper method names and semantics).
VERIFIED_VLLM_VERSION = "0.32.0"


class UnsupportedVLLMError(RuntimeError):
    """The installed vLLM is not the release ragswap's LoRA ops were verified for."""


def lora_ops_mode() -> str:
    mode = os.environ.get("RAGSWAP_LORA_OPS", "grouped").strip().lower()
    if mode not in {"grouped", "reference"}:
        raise ValueError(f"RAGSWAP_LORA_OPS must be 'grouped' or 'reference', not {mode!r}")
    return mode


def register() -> None:
    """Die with the parent process (embedded engines); install the grouped CPU LoRA wrapper and keep compilation
    with LoRA; fail loudly on an unverified vLLM release."""
    from serving.engine.lifeline import die_with_mp_parent

    die_with_mp_parent()
    import vllm
    from vllm.platforms import current_platform

    if not current_platform.is_cpu() or lora_ops_mode() == "reference":
        return
    if vllm.__version__ != VERIFIED_VLLM_VERSION:
        raise UnsupportedVLLMError(
            f"ragswap's CPU LoRA ops are verified for vLLM {VERIFIED_VLLM_VERSION}, found {vllm.__version__}. "
            "Install the pinned version (requirements/cpu.lock) or set RAGSWAP_LORA_OPS=reference to run "
            "vLLM's own (slower, mixed-batch-buggy) ops."
        )
    from vllm.lora.punica_wrapper import punica_cpu

    from serving.engine.grouped_lora import GroupedPunicaWrapperCPU

    if punica_cpu.PunicaWrapperCPU is not GroupedPunicaWrapperCPU:
        punica_cpu.PunicaWrapperCPU = GroupedPunicaWrapperCPU  # type: ignore[misc]
        logger.info("ragswap grouped CPU LoRA ops installed (vLLM %s)", vllm.__version__)
    keep_compilation_with_lora()
    load_inductor_aot_artifacts()


# ---- compilation with LoRA on CPU ---------------------------------------------------------------------------------

#: The statement of ``CpuPlatform.check_and_update_config`` (vLLM 0.32.0) that turns compilation off for LoRA.
_LORA_DISABLES_COMPILATION = re.compile(
    r"if vllm_config\.lora_config is not None:\s*compilation_config\.mode = CompilationMode\.NONE"
)
_PATCHED = "_ragswap_keeps_compilation_with_lora"


def keep_compilation_with_lora() -> None:
    """Wrap ``CpuPlatform.check_and_update_config`` so that a LoRA config no longer forces eager execution.

    The wrapper runs vLLM's own method and, if LoRA was the only reason it switched compilation off, restores the
    mode vLLM chooses without LoRA: ``DYNAMO_TRACE_ONCE`` with the inductor backend for the default
    ``VLLM_COMPILE``, or whatever mode the user asked for (``--compilation-config '{"mode": 0}'`` still means
    eager). It is a no-op for fully sharded LoRA, whose layers call LoRA ops the grouped wrapper does not wrap
    as custom ops.

    Raises:
        UnsupportedVLLMError: vLLM's method no longer has the statement this patch undoes (another release):
            patching blindly could leave data-dependent LoRA code inside a compiled graph.
    """
    from vllm.platforms.cpu import CpuPlatform

    original = CpuPlatform.check_and_update_config
    if getattr(original, _PATCHED, False):
        return
    try:
        source = inspect.getsource(original)
    except (OSError, TypeError) as exc:
        raise UnsupportedVLLMError(
            f"cannot read CpuPlatform.check_and_update_config to verify it: {exc}"
        ) from exc
    if not _LORA_DISABLES_COMPILATION.search(source):
        raise UnsupportedVLLMError(
            "CpuPlatform.check_and_update_config no longer switches compilation off for LoRA the way vLLM "
            f"{VERIFIED_VLLM_VERSION} does; ragswap's compilation patch is not verified for this vLLM. "
            "Set RAGSWAP_LORA_OPS=reference or install the pinned vLLM."
        )

    def check_and_update_config(cls: type[Any], vllm_config: Any) -> None:
        from vllm.config import CompilationMode

        compilation = vllm_config.compilation_config
        requested = compilation.mode
        original.__func__(cls, vllm_config)  # type: ignore[attr-defined]
        lora = vllm_config.lora_config
        if lora is None or compilation.mode != CompilationMode.NONE or requested == CompilationMode.NONE:
            return
        if getattr(lora, "fully_sharded_loras", False):
            logger.warning("fully sharded LoRA runs eager on CPU (ragswap compiles only the grouped path)")
            return
        compilation.mode = (
            CompilationMode.DYNAMO_TRACE_ONCE if requested == CompilationMode.VLLM_COMPILE else requested
        )
        logger.info(
            "ragswap: keeping CPU compilation with LoRA enabled",
            extra={"mode": compilation.mode.name, "backend": compilation.backend},
        )

    setattr(check_and_update_config, _PATCHED, True)
    CpuPlatform.check_and_update_config = classmethod(check_and_update_config)  # type: ignore[method-assign,assignment]


# ---- loading the AOT-compiled model on CPU ------------------------------------------------------------------------

#: The statement of ``vllm.compilation.decorators._try_load_aot_compiled_fn`` (vLLM 0.32.0) that fails on CPU.
_FINALIZE_CALL = "loaded_fn._artifacts.compiled_fn.finalize_loading(model.vllm_config)"


def load_inductor_aot_artifacts() -> None:
    """Give torch's bundled inductor artifact the ``finalize_loading`` step vLLM calls after loading one.

    vLLM's CPU platform compiles with the plain ``inductor`` backend (``DYNAMO_TRACE_ONCE``), so the function it
    saves in its AOT cache is torch's ``BundledAOTAutogradSerializableCallable``, not vLLM's own
    ``VllmSerializableFunction``. On loading, vLLM 0.32.0 calls ``compiled_fn.finalize_loading(vllm_config)``,
    which only its own class has: the call raises ``AttributeError`` ("'function' object has no attribute
    'finalize_loading'", through the wrapper's ``__getattr__``), vLLM logs "Compiling model again due to a load
    failure" and compiles from scratch, at every engine start and every restart after a crash. Torch's artifact
    is complete once deserialised (it wraps the inductor-compiled callable), so its ``finalize_loading`` has
    nothing to do. vLLM still verifies the traced sources and the config hash of the cache entry before using it.

    Raises:
        UnsupportedVLLMError: the loader no longer makes that call (another release): nothing is patched.
    """
    from torch._dynamo.aot_compile_types import BundledAOTAutogradSerializableCallable
    from vllm.compilation import decorators

    if "finalize_loading" in vars(BundledAOTAutogradSerializableCallable):
        return
    try:
        source = inspect.getsource(decorators._try_load_aot_compiled_fn)
    except (AttributeError, OSError, TypeError) as exc:
        raise UnsupportedVLLMError(f"cannot read vLLM's AOT loader to verify it: {exc}") from exc
    if _FINALIZE_CALL not in source:
        raise UnsupportedVLLMError(
            f"vLLM's AOT loader no longer calls `{_FINALIZE_CALL}` the way vLLM {VERIFIED_VLLM_VERSION} does; "
            "ragswap's AOT loading patch is not verified for this vLLM. Set RAGSWAP_LORA_OPS=reference or install "
            "the pinned vLLM."
        )

    def finalize_loading(self: Any, vllm_config: Any) -> None:
        """Nothing to finalise: deserialising the bundle loaded the compiled callable (ragswap, see plugin)."""

    BundledAOTAutogradSerializableCallable.finalize_loading = finalize_loading  # type: ignore[attr-defined]
