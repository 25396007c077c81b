"""Grouped multi-LoRA ops for vLLM's CPU build, usable inside vLLM's compiled (dynamo + inductor) model.

vLLM's CPU punica wrapper (``vllm/lora/punica_wrapper/punica_cpu.py`` with ``lora/ops/torch_ops``) gathers a
full adapter weight matrix for every token (``weights[indices]``) and multiplies them one by one. That costs
~80 % of a mixed-adapter decode step on CPU, and it indexes the weight stack with ``-1`` for rows that use no
adapter, so base-model requests batched with LoRA requests get the last adapter slot applied
(vllm-project/vllm#48421).

:class:`GroupedPunicaWrapperCPU` fixes both: once per step it groups the batch rows by adapter slot. Each linear
layer then computes the adapters' contribution ("delta") with vLLM's own prepacked CPU GEMM kernels
(:func:`cpu_linear`) on fused weights (the A matrices of all output slices stacked, the B matrices
block-diagonal, cached per layer): small batches (decode) in two kernels for all slots with a per-row slot mask
in between (:func:`masked_lora_delta`), larger ones with one kernel pair per active adapter on its rows only
(:func:`grouped_lora_delta`). The logits and embedding paths do one ``index_select`` -> matmul -> ``index_add_``
per active adapter. Rows with slot ``-1`` get exactly zero, and a step without adapter rows skips the LoRA work
entirely.

Only what an adapter really holds is computed. vLLM pads every slot to ``max_lora_rank`` and zero-fills the
modules an adapter does not target (``lm_head``, the embeddings, layers outside ``layers_to_transform``); the
per-layer weight cache (:class:`_FusedWeights`) keeps only the slots with non-zero weights, trimmed to the largest
rank they use, so a rank-16 adapter on an engine with ``max_lora_rank=64`` costs rank 16, and a module no loaded
adapter targets costs nothing.

**Compiled execution.** The grouping is data dependent (which slots a step has, how many rows each), so dynamo
cannot trace it. Under ``torch.compile`` each LoRA application is one opaque custom op (``ragswap::lora_linear``,
``ragswap::lora_embedding``, ``ragswap::lora_logits``, registered with vLLM's ``direct_register_custom_op`` and a
fake implementation): dynamo traces the rest of the model, the op runs this module's eager code at run time.
``serving.engine.plugin`` lets vLLM keep its CPU compilation mode when LoRA is enabled on that basis.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.library import Library
from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU
from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm
from vllm.utils.torch_utils import direct_register_custom_op


@dataclass(frozen=True)
class SlotGroups:
    """Batch rows grouped by adapter slot.

    Attributes:
        groups: ``(slot, rows)`` for every active slot; ``rows`` is ``None`` when the slot covers every row.
        base_rows: rows that use no adapter (slot ``-1``), ``None`` when there are none.
        num_rows: length of the index tensor the groups were built from.
    """

    groups: tuple[tuple[int, torch.Tensor | None], ...]
    base_rows: torch.Tensor | None
    num_rows: int
    perm: torch.Tensor | None = None
    """Adapter rows sorted by slot (``None``: every row, in order, uses the single active slot)."""
    segments: tuple[tuple[int, int, int], ...] = ()
    """``(slot, start, end)``: the rows of ``perm`` that use ``slot``."""
    indices: torch.Tensor | None = None
    """The per-row slots the groups were built from (:meth:`restrict` regroups them)."""
    _inverse: list[torch.Tensor] = field(default_factory=list, repr=False, compare=False)

    @classmethod
    def from_indices(cls, indices: torch.Tensor) -> SlotGroups:
        num_rows = int(indices.numel())
        if num_rows == 0:
            return cls((), None, 0)
        slots = torch.unique(indices).tolist()
        active = [s for s in slots if s >= 0]
        if len(slots) == 1:
            if not active:
                return cls((), _all_rows(indices), num_rows, indices=indices)
            return cls(((active[0], None),), None, num_rows, None, ((active[0], 0, num_rows),), indices)
        groups = tuple((s, (indices == s).nonzero().squeeze(1)) for s in active)
        base = (indices < 0).nonzero().squeeze(1) if slots[0] < 0 else None
        segments, start = [], 0
        for slot, rows in groups:
            segments.append((slot, start, start + int(rows.numel())))
            start += int(rows.numel())
        perm = torch.cat([rows for _, rows in groups]) if groups else None
        return cls(groups, base, num_rows, perm, tuple(segments), indices)

    @property
    def any_lora(self) -> bool:
        return bool(self.groups)

    def inverse(self) -> torch.Tensor:
        """For every row its position in ``perm``, or ``len(perm)`` for rows without an adapter (computed once)."""
        if not self._inverse:
            assert self.perm is not None
            inverse = torch.full(
                (self.num_rows,), self.perm.numel(), dtype=torch.long, device=self.perm.device
            )
            inverse[self.perm] = torch.arange(self.perm.numel(), device=self.perm.device)
            self._inverse.append(inverse)
        return self._inverse[0]

    @property
    def slots(self) -> frozenset[int]:
        return frozenset(slot for slot, _ in self.groups)

    def restrict(self, active: frozenset[int]) -> SlotGroups:
        """The same rows grouped as if only ``active`` slots held weights (the others count as base rows)."""
        if self.slots <= active:
            return self
        if self.indices is None or not (self.slots & active):
            return SlotGroups((), None, self.num_rows)
        keep = torch.tensor(sorted(active), dtype=self.indices.dtype, device=self.indices.device)
        return SlotGroups.from_indices(torch.where(torch.isin(self.indices, keep), self.indices, -1))


def _all_rows(indices: torch.Tensor) -> torch.Tensor:
    return torch.arange(indices.numel(), device=indices.device)


def _stacked(weights: torch.Tensor) -> torch.Tensor:
    """``(max_loras, 1, out, in)`` -> ``(max_loras, out, in)`` as the reference ops squeeze it."""
    return weights.squeeze(1) if weights.dim() == 4 else weights


def grouped_shrink(
    y: torch.Tensor, x: torch.Tensor, lora_a: torch.Tensor, groups: SlotGroups, scale: float
) -> None:
    """``y[rows, :r] = scale * x[rows] @ A[slot].T`` for each active slot; no-adapter rows untouched."""
    weights = _stacked(lora_a)
    rank = weights.shape[1]
    target = y[:, :rank]
    for slot, rows in groups.groups:
        a = weights[slot].to(y.dtype)
        if rows is None:
            target.copy_(scale * (x.to(y.dtype) @ a.t()))
        else:
            target.index_copy_(0, rows, scale * (x.index_select(0, rows).to(y.dtype) @ a.t()))


def grouped_expand(
    y: torch.Tensor,
    x: torch.Tensor,
    lora_b: torch.Tensor,
    groups: SlotGroups,
    add_inputs: bool,
    offset: int = 0,
    size: int | None = None,
) -> None:
    """``y[rows, offset:offset+size] (+)= x[rows] @ B[slot].T`` for each active slot.

    With ``size=None`` the whole width is targeted and, like the reference op, only the columns both the
    adapter and the model have are written (they may pad differently).
    """
    weights = _stacked(lora_b)
    if size is None:
        width = min(weights.shape[1], y.shape[1])
        target = y[:, :width]
    else:
        width = size
        target = y[:, offset : offset + size]
    for slot, rows in groups.groups:
        b = weights[slot, :width].to(y.dtype)
        if rows is None:
            out = x.to(y.dtype) @ b.t()
            if add_inputs:
                target += out
            else:
                target.copy_(out)
        else:
            out = x.index_select(0, rows).to(y.dtype) @ b.t()
            if add_inputs:
                target.index_add_(0, rows, out)
            else:
                target.index_copy_(0, rows, out)
    if not add_inputs and groups.base_rows is not None:
        target.index_fill_(0, groups.base_rows, 0)


DENSE_MAX_ROWS = 128
"""Up to this many rows (decode steps, small prefills) :func:`masked_lora_delta` is used: every row goes through
all slots' A/B in two matmuls and a per-row slot mask zeroes what does not belong to it. Above it, the per-slot
path (:func:`grouped_lora_delta`) does exactly each row's own adapter; the wasted FLOPs of the masked path grow
with rows x slots, the per-slot path's extra calls do not."""

Linear = Callable[[torch.Tensor], torch.Tensor]
"""``x -> x @ W.T`` for one fixed weight ``W``."""


def cpu_linear(weight: torch.Tensor) -> Linear:
    """``x -> x @ weight.T`` with the kernel vLLM itself picks for a CPU linear layer of that shape and dtype.

    vLLM's ``dispatch_cpu_unquantized_gemm`` prepacks the weight for its AMX small-GEMM kernel (weights up to
    1 MiB with aligned shapes), for oneDNN (larger ones), or falls back to ``F.linear``. For LoRA-sized matrices
    at decode batch sizes the prepacked kernels are 2-3x faster than ``torch.mm``, whose per-call cost
    dominates at these shapes.
    """
    holder = torch.nn.Module()
    holder.weight = torch.nn.Parameter(weight.contiguous(), requires_grad=False)
    dispatch_cpu_unquantized_gemm(holder, remove_weight=False)
    kernel: Callable[[torch.Tensor, torch.Tensor, None], torch.Tensor] = holder.cpu_linear  # type: ignore[assignment]
    w = holder.weight
    return lambda x: kernel(x, w, None)


def _pad_rows(t: torch.Tensor, multiple: int) -> torch.Tensor:
    extra = -t.shape[0] % multiple
    return torch.cat([t, t.new_zeros(extra, *t.shape[1:])]) if extra else t


WIDTH_MULTIPLE = 32
"""The fused shrink width (slots x slices x rank) is zero-padded to a multiple of this: vLLM's AMX kernel wants
``K % 32 == 0`` for the expand (whose ``K`` it is) and ``N % 16 == 0`` for the shrink."""


class FusedLora:
    """One linear layer's adapter weights, restricted to the slots that hold any, in the layouts the grouped
    paths multiply with.

    Only ``slots`` (the slots whose A and B are not all zero) are kept, trimmed to the largest rank they use; per
    slot the A matrices of all output slices (fused q/k/v, gate/up) are stacked into one ``(S*r, in)`` matrix and
    the B matrices into one block-diagonal ``(S*r, sum(out))`` matrix, so one linear layer costs two matmuls per
    active adapter instead of two per adapter *and* slice.
    """

    def __init__(self, a: torch.Tensor, b: torch.Tensor, slots: tuple[int, ...]) -> None:
        self.slots = slots
        """Engine slots kept, in order; ``a[k]``/``b[k]`` belong to ``slots[k]``."""
        self.a = a
        """``(len(slots), S*r, in)`` in the model dtype."""
        self.b = b
        """``(len(slots), S*r, sum(out))`` in the model dtype, block-diagonal over the output slices."""
        self.active = frozenset(slots)
        self.position = {slot: k for k, slot in enumerate(slots)}
        self.width = a.shape[1]
        """Columns of one slot's shrink output (``S*r``)."""
        self.out_features = b.shape[2]
        self._all: tuple[Linear, Linear] | None = None
        self._per_slot: dict[int, tuple[Linear, Linear]] = {}

    @classmethod
    def empty(cls, in_features: int, out_features: int, dtype: torch.dtype) -> FusedLora:
        return cls(
            torch.zeros(0, 0, in_features, dtype=dtype), torch.zeros(0, 0, out_features, dtype=dtype), ()
        )

    @property
    def all_slots(self) -> tuple[Linear, Linear]:
        """Shrink ``x -> (rows, padded K*S*r)`` and expand ``h -> (rows, sum(out))`` over every kept slot side by
        side (built on first use: the packing costs ~0.1-0.5 ms per layer)."""
        if self._all is None:
            a_all = _pad_rows(self.a.reshape(-1, self.a.shape[2]), WIDTH_MULTIPLE)  # (W, in)
            b_all = _pad_rows(self.b.reshape(-1, self.out_features), WIDTH_MULTIPLE)  # (W, out)
            self._all = (cpu_linear(a_all), cpu_linear(b_all.t()))
        return self._all

    @property
    def padded_width(self) -> int:
        return len(self.slots) * self.width + (-len(self.slots) * self.width) % WIDTH_MULTIPLE

    def slot(self, k: int) -> tuple[Linear, Linear]:
        """Shrink and expand of the ``k``-th kept slot alone (per-slot path)."""
        linears = self._per_slot.get(k)
        if linears is None:
            a = _pad_rows(self.a[k], WIDTH_MULTIPLE)
            b = _pad_rows(self.b[k], WIDTH_MULTIPLE)
            linears = self._per_slot[k] = (cpu_linear(a), cpu_linear(b.t()))
        return linears


def _used_rank(lora_a: tuple[torch.Tensor, ...], slots: tuple[int, ...]) -> int:
    """The largest rank the given slots use: vLLM zero-pads each adapter to ``max_lora_rank``."""
    used = 0
    for w in lora_a:
        rows = _stacked(w)[list(slots)].ne(0).any(dim=-1).any(dim=0)  # (R,) over the slots
        nz = rows.nonzero()
        if nz.numel():
            used = max(used, int(nz.max()) + 1)
    return max(used, 1)


def _active_slots(*weights: torch.Tensor) -> tuple[int, ...]:
    """Slots whose weights are not all zero in every one of ``weights`` (each ``(max_loras, ...)``)."""
    nonzero: torch.Tensor | None = None
    for w in weights:
        slot_nz = w.reshape(w.shape[0], -1).ne(0).any(dim=1)
        nonzero = slot_nz if nonzero is None else nonzero & slot_nz
    assert nonzero is not None
    return tuple(int(s) for s in nonzero.nonzero().flatten().tolist())


def fuse_lora(
    lora_a: tuple[torch.Tensor, ...],
    lora_b: tuple[torch.Tensor, ...],
    sizes: tuple[int, ...],
    dtype: torch.dtype,
) -> FusedLora:
    """:class:`FusedLora` of one layer's stacked vLLM weights (``(max_loras, 1, r, in)`` / ``(max_loras, 1, out,
    r)`` per output slice)."""
    a_slices = [_stacked(w) for w in lora_a]  # (L, r, in) each
    b_slices = [_stacked(w)[:, :size] for w, size in zip(lora_b, sizes, strict=True)]  # (L, out_s, r)
    a_any = torch.stack([w.reshape(w.shape[0], -1).ne(0).any(1) for w in a_slices]).any(0)
    b_any = torch.stack([w.reshape(w.shape[0], -1).ne(0).any(1) for w in b_slices]).any(0)
    slots = tuple(int(s) for s in (a_any & b_any).nonzero().flatten().tolist())
    if not slots:
        return FusedLora.empty(a_slices[0].shape[2], sum(sizes), dtype)
    rank = _used_rank(lora_a, slots)
    index = torch.tensor(slots)
    a = torch.cat([w[index, :rank] for w in a_slices], dim=1).to(dtype)  # (K, S*r, in)
    b = torch.zeros(len(slots), rank * len(b_slices), sum(sizes), dtype=dtype)
    col = 0
    for s, block in enumerate(b_slices):
        b[:, s * rank : (s + 1) * rank, col : col + block.shape[1]] = block[index, :, :rank].transpose(1, 2)
        col += block.shape[1]
    return FusedLora(a.contiguous(), b, slots)


class _FusedWeights:
    """Per-layer cache of :class:`FusedLora`, rebuilt when vLLM rewrites the layer's adapter weights.

    vLLM writes adapter weights in place (``set_lora``/``reset_lora``), which bumps the tensors' version
    counters: that is the key.
    """

    def __init__(self) -> None:
        self._entries: dict[int, tuple[tuple[int, ...], FusedLora]] = {}

    def get(
        self,
        lora_a: tuple[torch.Tensor, ...],
        lora_b: tuple[torch.Tensor, ...],
        sizes: tuple[int, ...],
        dtype: torch.dtype,
    ) -> FusedLora:
        key = lora_a[0].data_ptr()
        versions = tuple(t._version for t in (*lora_a, *lora_b))
        entry = self._entries.get(key)
        if entry is not None and entry[0] == versions:
            return entry[1]
        fused = fuse_lora(lora_a, lora_b, sizes, dtype)
        self._entries[key] = (versions, fused)
        return fused


def slot_mask(
    indices: torch.Tensor, slots: int | tuple[int, ...], width: int, scale: float, padded: int | None = None
) -> torch.Tensor:
    """``(rows, padded)`` fp32: ``scale`` in the ``width`` columns of each row's slot, zeros elsewhere (everywhere
    for rows with slot ``-1`` or a slot not in ``slots``, and in the padding columns past ``len(slots)*width``).

    ``slots`` is either a slot count (slots ``0..n-1``, in order) or the kept slots of a :class:`FusedLora`.
    """
    kept = tuple(range(slots)) if isinstance(slots, int) else slots
    column = torch.full((indices.numel(),), len(kept), dtype=torch.long, device=indices.device)
    for k, slot in enumerate(kept):
        column.masked_fill_(indices.view(-1) == slot, k)
    onehot = torch.zeros(indices.numel(), len(kept) + 1, dtype=torch.float32, device=indices.device)
    onehot.scatter_(1, column.view(-1, 1), scale)  # rows of no kept slot -> the extra column, dropped
    mask = onehot[:, : len(kept)].repeat_interleave(width, dim=1)
    extra = (padded or mask.shape[1]) - mask.shape[1]
    return torch.nn.functional.pad(mask, (0, extra)) if extra > 0 else mask


def masked_lora_delta(x: torch.Tensor, fused: FusedLora, mask: torch.Tensor) -> torch.Tensor:
    """``((x @ A_all.T) * mask) @ B_all``: ``mask`` keeps each row's own slot (times the scale) and is all zeros
    for rows without an adapter, whose delta is therefore exactly zero.

    Three kernels per layer whatever the number of active adapters; for small batches (decode) that beats one
    gather/matmul-pair/scatter per adapter.
    """
    shrink, expand = fused.all_slots
    return expand(shrink(x).mul_(mask))


def grouped_lora_delta(x: torch.Tensor, fused: FusedLora, groups: SlotGroups, scale: float) -> torch.Tensor:
    """``(scale * x[rows] @ A[slot].T) @ B[slot]`` for the rows of every active slot, zeros for the other rows.

    ``groups`` must name slots by their position in ``fused`` (:func:`_positions`).
    """
    if groups.perm is None:
        shrink, expand = fused.slot(groups.segments[0][0])
        h = shrink(x)
        return expand(h if scale == 1.0 else h.mul_(scale))
    xs = x.index_select(0, groups.perm)
    delta = x.new_zeros(xs.shape[0] + 1, fused.out_features)  # the last row stays zero: base rows gather it
    for slot, start, end in groups.segments:
        shrink, expand = fused.slot(slot)
        h = shrink(xs[start:end])
        delta[start:end] = expand(h if scale == 1.0 else h.mul_(scale))
    return delta.index_select(0, groups.inverse())


def _positions(groups: SlotGroups, fused: FusedLora) -> SlotGroups:
    """``groups`` with each slot renamed to its position in ``fused`` (the arrays hold kept slots only)."""
    position = fused.position
    return SlotGroups(
        tuple((position[slot], rows) for slot, rows in groups.groups),
        groups.base_rows,
        groups.num_rows,
        groups.perm,
        tuple((position[slot], start, end) for slot, start, end in groups.segments),
        groups.indices,
        groups._inverse,
    )


# ---- graph boundary for vLLM's compilation ----------------------------------------------------------------------

_LIB = Library("ragswap", "FRAGMENT")
_WRAPPERS: weakref.WeakValueDictionary[int, GroupedPunicaWrapperCPU] = weakref.WeakValueDictionary()
_HANDLES = itertools.count()


def _lora_linear_op(
    x: torch.Tensor,
    lora_a: list[torch.Tensor],
    lora_b: list[torch.Tensor],
    output_slices: list[int],
    scale: float,
    wrapper: int,
) -> torch.Tensor:
    delta = _WRAPPERS[wrapper].lora_linear_delta(x, tuple(lora_a), tuple(lora_b), scale, tuple(output_slices))
    return x.new_zeros(x.shape[0], sum(output_slices)) if delta is None else delta


def _lora_linear_fake(
    x: torch.Tensor, _a: object, _b: object, output_slices: list[int], *_: object
) -> torch.Tensor:
    return x.new_empty(x.shape[0], sum(output_slices))


def _in_place_fake(*_: object) -> None:
    """Fake implementation of the ops that only write into their first argument."""


def _lora_embedding_op(y: torch.Tensor, x: torch.Tensor, lora_b: torch.Tensor, wrapper: int) -> None:
    _WRAPPERS[wrapper].apply_lora_embedding(y, x, lora_b)


def _lora_logits_op(
    y: torch.Tensor, x: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor, scale: float, wrapper: int
) -> None:
    _WRAPPERS[wrapper].apply_lora_logits(y, x, (lora_a, lora_b), scale)


direct_register_custom_op(
    "lora_linear", _lora_linear_op, [], _lora_linear_fake, target_lib=_LIB, dispatch_key="CPU"
)
direct_register_custom_op(
    "lora_embedding", _lora_embedding_op, ["y"], _in_place_fake, target_lib=_LIB, dispatch_key="CPU"
)
direct_register_custom_op(
    "lora_logits", _lora_logits_op, ["y"], _in_place_fake, target_lib=_LIB, dispatch_key="CPU"
)


class GroupedPunicaWrapperCPU(PunicaWrapperCPU):
    """Drop-in replacement for vLLM's ``PunicaWrapperCPU`` using :func:`grouped_shrink` / :func:`grouped_expand`.

    Groups are computed in :meth:`update_metadata`, i.e. once per model step (outside any compiled graph)
    instead of once per op call (~200 op calls per step for a 30-layer model). Under ``torch.compile`` the
    ``add_lora_*`` entry points the LoRA layers call emit one ``ragswap::lora_*`` custom op each, which calls
    back into ``apply_lora_*`` here with the real tensors.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._token_groups = SlotGroups((), None, 0)
        self._sampler_groups = SlotGroups((), None, 0)
        self._fused = _FusedWeights()
        self._masks: dict[tuple[tuple[int, ...], int, float], torch.Tensor] = {}
        self._restricted: dict[tuple[bool, tuple[int, ...] | frozenset[int]], SlotGroups] = {}
        self._active: dict[tuple[int, ...], tuple[tuple[int, ...], frozenset[int]]] = {}
        self.handle = next(_HANDLES)
        """Names this wrapper in the custom ops (an int is what a compiled graph can carry)."""
        _WRAPPERS[self.handle] = self

    def update_metadata(
        self,
        mapping: Any,
        lora_index_to_id: list[int | None],
        max_loras: int,
        vocab_size: int,
        **kwargs: Any,
    ) -> None:
        # Only the per-token and per-sample slot indices are needed: the grouping replaces the sgmv metadata
        # (``compute_meta``) the reference prefill ops would otherwise rebuild every step.
        self._update_base_metadata(mapping, lora_index_to_id, max_loras, vocab_size)
        self.is_prefill = bool(mapping.is_prefill)
        self._token_groups = SlotGroups.from_indices(self.token_lora_indices)
        self._sampler_groups = SlotGroups.from_indices(self.sampler_indices)
        self._masks = {}
        self._restricted = {}

    def _groups(self, sampler: bool, layer: FusedLora | frozenset[int]) -> SlotGroups:
        """This step's token (or sampler) groups restricted to the slots a layer holds weights for; for a
        :class:`FusedLora` with slots renamed to their positions in it (built once per step and slot set)."""
        key = (sampler, layer.slots if isinstance(layer, FusedLora) else layer)
        groups = self._restricted.get(key)
        if groups is None:
            base = self._sampler_groups if sampler else self._token_groups
            active = layer.active if isinstance(layer, FusedLora) else layer
            groups = base.restrict(active)
            if isinstance(layer, FusedLora) and groups.any_lora:
                groups = _positions(groups, layer)
            self._restricted[key] = groups
        return groups

    def _active_slots(self, *weights: torch.Tensor) -> frozenset[int]:
        """Slots with non-zero ``weights`` (cached until vLLM rewrites them)."""
        key = tuple(w.data_ptr() for w in weights)
        versions = tuple(w._version for w in weights)
        entry = self._active.get(key)
        if entry is None or entry[0] != versions:
            entry = self._active[key] = (versions, frozenset(_active_slots(*weights)))
        return entry[1]

    def _slot_mask(self, fused: FusedLora, scale: float, dtype: torch.dtype) -> torch.Tensor:
        """``(rows, padded width)``: ``scale`` in the columns of each row's own slot, zeros elsewhere (built once
        per step and layout)."""
        key = (fused.slots, fused.width, scale)
        mask = self._masks.get(key)
        if mask is None:
            mask = slot_mask(self.token_lora_indices, fused.slots, fused.width, scale, fused.padded_width)
            mask = self._masks[key] = mask.to(dtype)
        return mask

    # Token-level ops: prefill and decode use the same per-token slots (the reference's sgmv path expands
    # per-sequence slots back to exactly ``token_lora_indices``).
    def _groups_for(self, rows: int) -> SlotGroups | None:
        groups = self._token_groups
        return groups if groups.num_rows == rows else None

    def _shrink(self, y: torch.Tensor, x: torch.Tensor, w_t_all: torch.Tensor, scale: float) -> None:
        groups = self._groups_for(x.shape[0])
        if groups is None:  # shapes the grouping does not cover: defer to vLLM's reference op
            super()._shrink_decode(y, x, w_t_all, scale)
        elif groups.any_lora:
            grouped_shrink(y, x, w_t_all, groups, scale)

    def _expand(
        self,
        y: torch.Tensor,
        x: torch.Tensor,
        w_t_all: torch.Tensor,
        add_inputs: bool,
        offset: int = 0,
        size: int | None = None,
    ) -> None:
        groups = self._groups_for(x.shape[0])
        if groups is None:
            if size is None:
                super()._expand_decode(y, x, w_t_all, add_inputs)
            else:
                super()._expand_slice_decode(y, x, w_t_all, offset, size, add_inputs)
        elif groups.any_lora or not add_inputs:
            grouped_expand(y, x, w_t_all, groups, add_inputs, offset, size)

    def _shrink_prefill(self, y: torch.Tensor, x: torch.Tensor, w_t_all: torch.Tensor, scale: float) -> None:
        self._shrink(y, x, w_t_all, scale)

    def _shrink_decode(self, y: torch.Tensor, x: torch.Tensor, w_t_all: torch.Tensor, scale: float) -> None:
        self._shrink(y, x, w_t_all, scale)

    def _expand_prefill(
        self, y: torch.Tensor, x: torch.Tensor, w_t_all: torch.Tensor, add_inputs: bool
    ) -> None:
        self._expand(y, x, w_t_all, add_inputs)

    def _expand_decode(
        self, y: torch.Tensor, x: torch.Tensor, w_t_all: torch.Tensor, add_inputs: bool
    ) -> None:
        self._expand(y, x, w_t_all, add_inputs)

    def _expand_slice_prefill(
        self,
        y: torch.Tensor,
        x: torch.Tensor,
        w_t_all: torch.Tensor,
        y_offset: int,
        y_slice_size: int,
        add_inputs: bool,
    ) -> None:
        self._expand(y, x, w_t_all, add_inputs, y_offset, y_slice_size)

    def _expand_slice_decode(
        self,
        y: torch.Tensor,
        x: torch.Tensor,
        w_t_all: torch.Tensor,
        y_offset: int,
        y_slice_size: int,
        add_inputs: bool,
    ) -> None:
        self._expand(y, x, w_t_all, add_inputs, y_offset, y_slice_size)

    # ---- the entry points vLLM's LoRA layers call ---------------------------------------------------------------

    def add_shrink(self, *args: Any, **kwargs: Any) -> None:
        if torch.compiler.is_compiling():
            raise NotImplementedError(
                "ragswap's compiled CPU LoRA path covers add_lora_linear/embedding/logits; the fully sharded "
                "LoRA layers that call add_shrink run eager only (the plugin keeps compilation off for them)"
            )
        super().add_shrink(*args, **kwargs)

    def add_expand(self, *args: Any, **kwargs: Any) -> None:
        if torch.compiler.is_compiling():
            raise NotImplementedError("see add_shrink: fully sharded LoRA layers run eager only")
        super().add_expand(*args, **kwargs)

    def add_lora_linear(
        self,
        y: torch.Tensor,
        x: torch.Tensor,
        lora_a_stacked: tuple[torch.Tensor, ...],
        lora_b_stacked: tuple[torch.Tensor, ...],
        scale: float,
        output_slices: tuple[int, ...],
        *,
        buffer: tuple[torch.Tensor, ...] | None = None,
        **kwargs: Any,
    ) -> None:
        flat_x = x.view(-1, x.shape[-1])
        if torch.compiler.is_compiling():
            # Functional op + an in-graph add: inductor fuses the add into the consumers of ``y`` (rotary, SiLU,
            # residual add) instead of a separate pass over it.
            delta = torch.ops.ragswap.lora_linear(
                flat_x, list(lora_a_stacked), list(lora_b_stacked), list(output_slices), scale, self.handle
            )
        else:
            delta = self.lora_linear_delta(flat_x, lora_a_stacked, lora_b_stacked, scale, output_slices)
            if delta is None:
                return
        y.view(-1, y.shape[-1])[:, : delta.shape[1]].add_(delta)

    def add_lora_embedding(
        self,
        y: torch.Tensor,
        x: torch.Tensor,
        lora_b_stacked: torch.Tensor,
        add_inputs: bool = True,
        **kwargs: Any,
    ) -> None:
        if not add_inputs:  # vLLM's layers always add; keep the reference semantics for anything else
            super().add_lora_embedding(y, x, lora_b_stacked, add_inputs, **kwargs)
        elif torch.compiler.is_compiling():
            torch.ops.ragswap.lora_embedding(y, x, lora_b_stacked, self.handle)
        else:
            self.apply_lora_embedding(y, x, lora_b_stacked)

    def add_lora_logits(
        self,
        y: torch.Tensor,
        x: torch.Tensor,
        lora_a_stacked: torch.Tensor,
        lora_b_stacked: torch.Tensor,
        scale: Any,
        *,
        buffer: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> None:
        if torch.compiler.is_compiling():
            torch.ops.ragswap.lora_logits(y, x, lora_a_stacked, lora_b_stacked, float(scale), self.handle)
        else:
            self.apply_lora_logits(y, x, (lora_a_stacked, lora_b_stacked), scale, buffer)

    # ---- eager implementations (also what the custom ops run) ---------------------------------------------------

    def lora_linear_delta(
        self,
        x: torch.Tensor,
        lora_a_stacked: tuple[torch.Tensor, ...],
        lora_b_stacked: tuple[torch.Tensor, ...],
        scale: float,
        output_slices: tuple[int, ...],
    ) -> torch.Tensor | None:
        """What the adapters add to one linear layer's output for this step's rows (``x``: ``(rows, in)``), or
        ``None`` when no row of the step uses an adapter that targets the layer (base rows get exact zeros)."""
        if (
            self._token_groups.num_rows != x.shape[0]
        ):  # shapes the grouping does not cover: vLLM's reference op
            delta = x.new_zeros(x.shape[0], sum(output_slices))
            super().add_lora_linear(delta, x, lora_a_stacked, lora_b_stacked, scale, output_slices)
            return delta
        if not self._token_groups.any_lora:
            return None  # a step with no adapter rows needs no LoRA work at all
        fused = self._fused.get(lora_a_stacked, lora_b_stacked, tuple(output_slices), x.dtype)
        groups = self._groups(False, fused)
        if not groups.any_lora:
            return None  # no row of this step uses an adapter that targets this layer
        if groups.num_rows <= DENSE_MAX_ROWS:
            return masked_lora_delta(x, fused, self._slot_mask(fused, scale, x.dtype))
        return grouped_lora_delta(x, fused, groups, scale)

    def apply_lora_embedding(self, y: torch.Tensor, x: torch.Tensor, lora_b_stacked: torch.Tensor) -> None:
        flat_y = y.view(-1, y.shape[-1])
        if self._token_groups.num_rows != x.shape[0]:
            super().add_lora_embedding(flat_y, x, lora_b_stacked, True)
            return
        if not self._token_groups.any_lora:
            return
        groups = self._groups(False, self._active_slots(lora_b_stacked))
        if groups.any_lora:
            grouped_expand(flat_y, x, lora_b_stacked, groups, add_inputs=True)

    def apply_lora_logits(
        self,
        y: torch.Tensor,
        x: torch.Tensor,
        weights: tuple[torch.Tensor, torch.Tensor],
        scale: Any,
        buffer: torch.Tensor | None = None,
    ) -> None:
        """``y += B(A x)`` on the logits for the sampled rows of adapters with ``lm_head`` weights."""
        lora_a_stacked, lora_b_stacked = weights
        flat_x = x.view(-1, x.shape[-1])
        if self._sampler_groups.num_rows != flat_x.shape[0]:
            super().add_lora_logits(y, x, lora_a_stacked, lora_b_stacked, scale, buffer=buffer)
            return
        if not self._sampler_groups.any_lora:
            return
        groups = self._groups(True, self._active_slots(lora_a_stacked, lora_b_stacked))
        if not groups.any_lora:
            return  # no adapter of this step has lm_head weights (the common case)
        flat_y = y.view(-1, y.shape[-1])
        rank = lora_b_stacked.size(-1)
        if buffer is None:
            buffer = torch.zeros((flat_x.size(0), rank), dtype=torch.float32, device=flat_x.device)
        grouped_shrink(buffer, flat_x, lora_a_stacked, groups, scale)
        grouped_expand(flat_y, buffer, lora_b_stacked, groups, add_inputs=True)
