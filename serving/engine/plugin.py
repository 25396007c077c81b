"""vLLM general plugin (entry point ``vllm.general_plugins: ragswap_lora_ops``).

vLLM calls :func:`register` once in every engine-core and worker process. On the CPU platform it swaps vLLM's
``PunicaWrapperCPU`` for ragswap's grouped implementation (faster, and correct for base requests batched with
adapter requests: see :mod:`serving.engine.grouped_lora`). Nothing is edited on disk: vLLM resolves the wrapper
class by its qualified name at model load, after plugins ran, so replacing the module attribute is enough.

``RAGSWAP_LORA_OPS=reference`` keeps vLLM's own ops (used by benchmarks and tests to compare against them).

In an engine ragswap started, the plugin first ties the process's life to its parent's
(:func:`serving.engine.lifeline.die_with_mp_parent`): an ``EngineCore`` or ``Worker`` process dies with the process
that started it instead of running on as an orphan.
"""

from __future__ import annotations

import logging
import os

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
    """Die with the parent process (embedded engines); install the grouped CPU LoRA wrapper; fail loudly on an
    unverified vLLM release."""
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
