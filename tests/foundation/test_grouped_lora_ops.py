"""ragswap's grouped CPU LoRA ops against vLLM's reference torch ops (vllm/lora/ops/torch_ops)."""

from __future__ import annotations

import pytest
import torch
from vllm.lora.ops.torch_ops import bgmv_expand, bgmv_expand_slice, bgmv_shrink

from serving.engine.grouped_lora import SlotGroups, grouped_expand, grouped_shrink

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
    whole = SlotGroups.from_indices(torch.tensor([2, 2, 2]))
    assert whole.groups[0][0] == 2 and whole.groups[0][1] is None and whole.base_rows is None


@pytest.mark.parametrize("path", ["per_slot", "masked"])
@pytest.mark.parametrize("slots", [[1, 1, 1], [0, -1, 2, 3, 2, -1, 0], [-1, 3, -1]])
def test_fused_linear_matches_reference_shrink_then_expand(slots: list[int], path: str) -> None:
    """One fused call per linear layer (q/k/v slices together) equals vLLM's per-slice shrink + expand, on both
    the per-slot path (large batches) and the masked all-slots path (decode)."""
    from serving.engine.grouped_lora import _FusedWeights, grouped_lora_linear, masked_lora_linear, slot_mask

    gen = torch.Generator().manual_seed(1)
    sizes = (OUT, 32, 32)
    lora_a = tuple(
        torch.randn(MAX_LORAS, 1, RANK, HIDDEN, generator=gen, dtype=torch.bfloat16) for _ in sizes
    )
    lora_b = tuple(
        torch.randn(MAX_LORAS, 1, size, RANK, generator=gen, dtype=torch.bfloat16) for size in sizes
    )
    indices = torch.tensor(slots)
    lora_rows = indices >= 0
    x = torch.randn(len(slots), HIDDEN, dtype=torch.bfloat16)
    y0 = torch.randn(len(slots), sum(sizes), dtype=torch.bfloat16)

    ref = y0.clone()
    offset = 0
    for a, b, size in zip(lora_a, lora_b, sizes, strict=True):
        buf = torch.zeros(len(slots), RANK)
        bgmv_shrink(x, a, buf, indices, 0.25)
        bgmv_expand_slice(buf, b, ref, indices, offset, size, add_inputs=True)
        offset += size

    cache = _FusedWeights()
    got = y0.clone()
    fused = cache.get(lora_a, lora_b, sizes, got.dtype)
    if path == "per_slot":
        grouped_lora_linear(got, x, fused.a, fused.b, SlotGroups.from_indices(indices), 0.25)
    else:
        mask = slot_mask(indices, MAX_LORAS, fused.a.shape[1], 0.25)
        masked_lora_linear(got, x, fused, mask)
    torch.testing.assert_close(got[lora_rows], ref[lora_rows], atol=0.05, rtol=0.02)
    assert torch.equal(got[~lora_rows], y0[~lora_rows])

    # vLLM rewrites adapter weights in place when a slot is reused: the cache must notice.
    lora_a[0][slots[0] if slots[0] >= 0 else 3].mul_(2)
    assert cache.get(lora_a, lora_b, sizes, got.dtype).a is not fused.a
