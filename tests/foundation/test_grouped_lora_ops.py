"""ragswap's grouped CPU LoRA ops against vLLM's reference torch ops (vllm/lora/ops/torch_ops), eager and under
``torch.compile`` (the custom-op boundary vLLM's compiled model goes through)."""

from __future__ import annotations

import pytest
import torch
from vllm.lora.layers import LoRAMapping
from vllm.lora.ops.torch_ops import bgmv_expand, bgmv_expand_slice, bgmv_shrink

from serving.engine.grouped_lora import (
    GroupedPunicaWrapperCPU,
    SlotGroups,
    _FusedWeights,
    _positions,
    fuse_lora,
    grouped_expand,
    grouped_lora_delta,
    grouped_shrink,
    masked_lora_delta,
    slot_mask,
)

MAX_LORAS, RANK, HIDDEN, OUT = 4, 8, 64, 96


@pytest.fixture()
def weights() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    lora_a = torch.randn(MAX_LORAS, 1, RANK, HIDDEN, generator=gen, dtype=torch.bfloat16)
    lora_b = torch.randn(MAX_LORAS, 1, OUT, RANK, generator=gen, dtype=torch.bfloat16)
    return lora_a, lora_b


@pytest.mark.parametrize(
    "slots",
    [
        [0, 0, 0, 0],  # one adapter covers every row: no gather/scatter
        [2, 0, 1, 2, 3, 1],  # every row has an adapter
        [-1, 1, -1, 3, 0, -1, 1],  # base rows mixed in: the reference corrupts them
        [-1, -1, -1],  # no adapter at all
    ],
)
def test_grouped_ops_match_reference_and_leave_base_rows_alone(
    slots: list[int], weights: tuple[torch.Tensor, torch.Tensor]
) -> None:
    lora_a, lora_b = weights
    indices = torch.tensor(slots)
    lora_rows = indices >= 0
    x = torch.randn(len(slots), HIDDEN, dtype=torch.bfloat16)
    groups = SlotGroups.from_indices(indices)
    assert groups.any_lora == bool(lora_rows.any())

    # shrink: buffer = scale * x @ A[slot].T  (fp32 buffer, as vLLM allocates it)
    ref_buf = torch.zeros(len(slots), RANK)
    bgmv_shrink(x, lora_a, ref_buf, indices, 0.5)
    buf = torch.zeros(len(slots), RANK)
    grouped_shrink(buf, x, lora_a, groups, 0.5)
    torch.testing.assert_close(buf[lora_rows], ref_buf[lora_rows])
    assert torch.count_nonzero(buf[~lora_rows]) == 0

    # expand with add: y += buffer @ B[slot].T
    base_y = torch.randn(len(slots), OUT, dtype=torch.bfloat16)
    ref_y, y = base_y.clone(), base_y.clone()
    bgmv_expand(ref_buf, lora_b, ref_y, indices, add_inputs=True)
    grouped_expand(y, buf, lora_b, groups, add_inputs=True)
    torch.testing.assert_close(y[lora_rows], ref_y[lora_rows])
    assert torch.equal(y[~lora_rows], base_y[~lora_rows]), "base-model rows must be untouched"
    if (~lora_rows).any() and lora_rows.any():
        # vLLM's reference indexes the weight stack with -1 and applies the last slot to base rows (#48421).
        assert not torch.equal(ref_y[~lora_rows], base_y[~lora_rows])

    # expand into a column slice, as the fused qkv/gate_up projections do
    sliced_base = torch.randn(len(slots), 2 * OUT, dtype=torch.bfloat16)
    ref_s, got_s = sliced_base.clone(), sliced_base.clone()
    bgmv_expand_slice(ref_buf, lora_b, ref_s, indices, OUT, OUT, add_inputs=True)
    grouped_expand(got_s, buf, lora_b, groups, add_inputs=True, offset=OUT, size=OUT)
    torch.testing.assert_close(got_s[lora_rows], ref_s[lora_rows])
    assert torch.equal(got_s[~lora_rows], sliced_base[~lora_rows])
    assert torch.equal(got_s[:, :OUT], sliced_base[:, :OUT])


def test_slot_groups_partition_rows() -> None:
    groups = SlotGroups.from_indices(torch.tensor([3, -1, 3, 1, -1]))
    assert [slot for slot, _ in groups.groups] == [1, 3]
    rows = {slot: r.tolist() for slot, r in groups.groups if r is not None}
    assert rows == {1: [3], 3: [0, 2]}
    assert groups.base_rows is not None and groups.base_rows.tolist() == [1, 4]
    assert groups.inverse().tolist() == [1, 3, 2, 0, 3]  # position in perm [3, 0, 2]; base rows -> len(perm)
    whole = SlotGroups.from_indices(torch.tensor([2, 2, 2]))
    assert whole.groups[0][0] == 2 and whole.groups[0][1] is None and whole.base_rows is None
    # Restricted to the slots a layer holds weights for: slot 3's rows become base rows there.
    only_one = groups.restrict(frozenset({1}))
    assert [slot for slot, _ in only_one.groups] == [1] and only_one.perm is not None
    assert only_one.perm.tolist() == [3]
    assert not groups.restrict(frozenset({0, 2})).any_lora


def _stacked_weights(
    sizes: tuple[int, ...], rank: int, max_rank: int, seed: int = 1
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """vLLM's layout: ``(max_loras, 1, max_rank, in)`` / ``(max_loras, 1, out, max_rank)`` per output slice, each
    adapter zero-padded from ``rank`` to ``max_rank``."""
    gen = torch.Generator().manual_seed(seed)
    lora_a = tuple(torch.zeros(MAX_LORAS, 1, max_rank, HIDDEN, dtype=torch.bfloat16) for _ in sizes)
    lora_b = tuple(torch.zeros(MAX_LORAS, 1, size, max_rank, dtype=torch.bfloat16) for size in sizes)
    for a, b in zip(lora_a, lora_b, strict=True):
        a[:, :, :rank] = torch.randn(MAX_LORAS, 1, rank, HIDDEN, generator=gen, dtype=torch.bfloat16)
        b[:, :, :, :rank] = torch.randn(MAX_LORAS, 1, b.shape[2], rank, generator=gen, dtype=torch.bfloat16)
    return lora_a, lora_b


def _reference_linear(
    y0: torch.Tensor,
    x: torch.Tensor,
    lora_a: tuple[torch.Tensor, ...],
    lora_b: tuple[torch.Tensor, ...],
    indices: torch.Tensor,
    sizes: tuple[int, ...],
    scale: float,
) -> torch.Tensor:
    """vLLM's per-slice shrink + expand (what ``PunicaWrapperCPU.add_lora_linear`` does)."""
    ref = y0.clone()
    offset = 0
    for a, b, size in zip(lora_a, lora_b, sizes, strict=True):
        buf = torch.zeros(x.shape[0], a.shape[2])
        bgmv_shrink(x, a, buf, indices, scale)
        bgmv_expand_slice(buf, b, ref, indices, offset, size, add_inputs=True)
        offset += size
    return ref


@pytest.mark.parametrize("path", ["per_slot", "masked"])
@pytest.mark.parametrize("slots", [[1, 1, 1], [0, -1, 2, 3, 2, -1, 0], [-1, 3, -1]])
def test_fused_linear_matches_reference_shrink_then_expand(slots: list[int], path: str) -> None:
    """One fused delta per linear layer (q/k/v slices together) equals vLLM's per-slice shrink + expand, on both
    the per-slot path (large batches) and the masked all-slots path (decode); base rows get exactly zero."""
    sizes = (OUT, 32, 32)
    lora_a, lora_b = _stacked_weights(sizes, RANK, RANK)
    indices = torch.tensor(slots)
    lora_rows = indices >= 0
    x = torch.randn(len(slots), HIDDEN, dtype=torch.bfloat16)
    y0 = torch.randn(len(slots), sum(sizes), dtype=torch.bfloat16)
    ref = _reference_linear(y0, x, lora_a, lora_b, indices, sizes, 0.25)

    cache = _FusedWeights()
    fused = cache.get(lora_a, lora_b, sizes, torch.bfloat16)
    if path == "per_slot":
        delta = grouped_lora_delta(x, fused, _positions(SlotGroups.from_indices(indices), fused), 0.25)
    else:
        mask = slot_mask(indices, fused.slots, fused.width, 0.25, fused.padded_width).to(torch.bfloat16)
        delta = masked_lora_delta(x, fused, mask)
    got = y0 + delta
    torch.testing.assert_close(got[lora_rows], ref[lora_rows], atol=0.1, rtol=0.02)
    assert torch.count_nonzero(delta[~lora_rows]) == 0

    # vLLM rewrites adapter weights in place when a slot is reused: the cache must notice.
    lora_a[0][slots[0] if slots[0] >= 0 else 3].mul_(2)
    assert cache.get(lora_a, lora_b, sizes, torch.bfloat16) is not fused


def test_fused_weights_keep_only_used_slots_and_rank() -> None:
    """vLLM pads every adapter to max_lora_rank and zero-fills empty slots: neither may cost anything."""
    sizes = (OUT,)
    lora_a, lora_b = _stacked_weights(sizes, rank=4, max_rank=16)
    for w in (*lora_a, *lora_b):
        w[1].zero_()  # slot 1: an adapter that does not target this layer
        w[3].zero_()  # slot 3: empty
    fused = fuse_lora(lora_a, lora_b, sizes, torch.bfloat16)
    assert fused.slots == (0, 2) and fused.width == 4
    indices = torch.tensor([0, 1, 2, 3, -1, 2] * 30)  # > DENSE_MAX_ROWS rows: the per-slot path
    x = torch.randn(indices.numel(), HIDDEN, dtype=torch.bfloat16)
    y0 = torch.zeros(indices.numel(), OUT, dtype=torch.bfloat16)
    ref = _reference_linear(y0, x, lora_a, lora_b, indices.clamp(min=0) * (indices >= 0), sizes, 1.0)
    groups = _positions(SlotGroups.from_indices(indices).restrict(fused.active), fused)
    delta = grouped_lora_delta(x, fused, groups, 1.0)
    used = (indices == 0) | (indices == 2)
    torch.testing.assert_close(delta[used], ref[used], atol=0.1, rtol=0.02)
    assert torch.count_nonzero(delta[~used]) == 0
    none = fuse_lora(tuple(w.zero_() for w in lora_a), lora_b, sizes, torch.bfloat16)
    assert none.slots == () and not SlotGroups.from_indices(indices).restrict(none.active).any_lora


class _LoRALinear(torch.nn.Module):
    """A linear layer with LoRA applied the way vLLM's ``BaseLinearLayerWithLoRA`` does it."""

    def __init__(self, wrapper: GroupedPunicaWrapperCPU, sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.wrapper = wrapper
        self.sizes = sizes
        self.base = torch.nn.Linear(HIDDEN, sum(sizes), bias=False, dtype=torch.bfloat16)
        self.lora_a_stacked, self.lora_b_stacked = _stacked_weights(sizes, RANK, 16, seed=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        self.wrapper.add_lora_linear(out, x, self.lora_a_stacked, self.lora_b_stacked, 1.0, self.sizes)
        return torch.nn.functional.silu(out)


def _set_mapping(wrapper: GroupedPunicaWrapperCPU, slots: list[int]) -> None:
    """What vLLM's LoRA manager does before each step: per-token LoRA ids -> slots (ids 1..4 in slots 0..3)."""
    ids = tuple(s + 1 for s in slots)  # slot -1 -> id 0 (no adapter)
    wrapper.update_metadata(LoRAMapping(ids, ids, is_prefill=True), [1, 2, 3, 4], MAX_LORAS, 1000)


def test_compiled_graph_calls_the_op_with_each_steps_grouping(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compiled the way vLLM's CPU platform compiles a model (inductor, dynamic batch, every guard dropped, one
    trace), the LoRA application is the opaque ``ragswap::lora_linear`` op: it runs at every call with that
    step's slot mapping, base rows stay base rows, and results equal eager execution and vLLM's reference."""
    torch.manual_seed(0)
    torch._dynamo.reset()
    wrapper = GroupedPunicaWrapperCPU(512, 64, "cpu")
    layer = _LoRALinear(wrapper, (OUT, 32, 32))
    calls: list[int] = []
    delta = wrapper.lora_linear_delta

    def counted(x: torch.Tensor, *args: object) -> torch.Tensor | None:
        calls.append(x.shape[0])
        return delta(x, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(wrapper, "lora_linear_delta", counted)
    compiled = torch.compile(
        layer,
        backend="inductor",
        fullgraph=True,
        dynamic=False,
        options={"guard_filter_fn": torch.compiler.skip_all_guards_unsafe},
    )
    steps = [
        [0, -1, 2, 3, 2, -1, 0, 1],  # decode-sized mixed step: masked path
        [-1] * 5,  # no adapter rows: the op returns zeros
        [3, 1, -1] * 60,  # prefill-sized: per-slot path
        [2, 2, 2, 2],  # one adapter for the whole step
    ]
    with torch.no_grad():
        for i, slots in enumerate(steps):
            _set_mapping(wrapper, slots)
            x = torch.randn(len(slots), HIDDEN, dtype=torch.bfloat16)
            if i == 0:
                torch._dynamo.mark_dynamic(x, 0)
            got = compiled(x)
            assert calls[-1] == len(slots), "the op must run at every call (data-dependent grouping)"
            indices = torch.tensor(slots)
            base = indices < 0
            base_out = layer.base(x)
            ref = _reference_linear(
                base_out, x, layer.lora_a_stacked, layer.lora_b_stacked, indices, layer.sizes, 1.0
            )
            torch.testing.assert_close(got[base], torch.nn.functional.silu(base_out[base]))
            torch.testing.assert_close(got[~base], torch.nn.functional.silu(ref[~base]), atol=0.1, rtol=0.05)
            torch.testing.assert_close(got, layer(x), atol=0.05, rtol=0.02)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1, "traced once, never recompiled"


# ---- the plugin: compilation stays on with LoRA, only on the verified vLLM -------------------------------------


def _engine_config(base_model_path: object, **kwargs: object) -> object:
    from vllm.engine.arg_utils import EngineArgs

    # EngineArgs loads vLLM's general plugins (ragswap's entry point) before it builds the config, exactly as in
    # the API-server process of `ragswap engine`.
    return EngineArgs(model=str(base_model_path), max_model_len=2048, **kwargs).create_engine_config()


def test_lora_engine_config_keeps_cpu_compilation(base_model_path: object) -> None:
    from vllm.config import CompilationMode

    with_lora = _engine_config(base_model_path, enable_lora=True, max_lora_rank=16)
    assert with_lora.compilation_config.mode == CompilationMode.DYNAMO_TRACE_ONCE  # type: ignore[attr-defined]
    assert with_lora.compilation_config.backend == "inductor"  # type: ignore[attr-defined]
    without = _engine_config(base_model_path)
    assert without.compilation_config.mode == with_lora.compilation_config.mode  # type: ignore[attr-defined]
    eager = _engine_config(base_model_path, enable_lora=True, compilation_config={"mode": 0})
    assert eager.compilation_config.mode == CompilationMode.NONE  # type: ignore[attr-defined]


def test_plugin_refuses_unverified_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    import vllm
    from vllm.platforms.cpu import CpuPlatform

    from serving.engine import plugin

    monkeypatch.setattr(vllm, "__version__", "0.33.0")
    with pytest.raises(plugin.UnsupportedVLLMError, match=r"verified for vLLM 0\.32\.0"):
        plugin.register()
    monkeypatch.undo()

    def changed_upstream(cls: type, vllm_config: object) -> None:  # LoRA no longer handled the 0.32.0 way
        return None

    monkeypatch.setattr(CpuPlatform, "check_and_update_config", classmethod(changed_upstream))
    with pytest.raises(plugin.UnsupportedVLLMError, match="not verified"):
        plugin.keep_compilation_with_lora()
    monkeypatch.undo()

    from torch._dynamo.aot_compile_types import BundledAOTAutogradSerializableCallable
    from vllm.compilation import decorators

    def loader_changed_upstream(
        model: object, path: str
    ) -> None:  # no longer calls finalize_loading that way
        return None

    monkeypatch.delattr(BundledAOTAutogradSerializableCallable, "finalize_loading", raising=False)
    monkeypatch.setattr(decorators, "_try_load_aot_compiled_fn", loader_changed_upstream)
    with pytest.raises(plugin.UnsupportedVLLMError, match="AOT loading patch is not verified"):
        plugin.load_inductor_aot_artifacts()
    assert "finalize_loading" not in vars(BundledAOTAutogradSerializableCallable), "patched blindly"


def test_plugin_lets_vllm_load_the_cpu_inductor_artifact(base_model_path: object) -> None:
    """vLLM's AOT loader calls ``compiled_fn.finalize_loading``, which torch's bundled inductor artifact (what the
    CPU platform saves) lacks; with the plugin loaded it has it, and it does nothing. The end-to-end proof is the
    engine restart in ``tests/serving/test_engine_failures.py`` (its log says it loaded, not compiled again)."""
    from torch._dynamo.aot_compile_types import BundledAOTAutogradSerializableCallable

    _engine_config(base_model_path)  # loads the general plugins, as the engine processes do
    bundle = BundledAOTAutogradSerializableCallable.__new__(BundledAOTAutogradSerializableCallable)
    bundle.compiled_fn = lambda *args: args  # what deserialising gives it: the compiled callable
    assert bundle.finalize_loading(object()) is None
    assert bundle(1, 2) == (1, 2)
