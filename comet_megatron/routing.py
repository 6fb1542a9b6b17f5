"""Routing bookkeeping shared by every backend, written once.

Vocabulary used across the package:

* **slot** — one routed (token, expert) pair on the token owner's rank. Slots are kept in
  *expert-major* order (global expert ascending, token ascending within an expert), which is the
  order of Megatron's ``permute`` and therefore also rank-major (the experts of EP rank ``r`` are
  the contiguous range ``[r * E_local, (r + 1) * E_local)``).
* **counts matrix** ``C`` — ``int64 [ep, E]``; ``C[s, e]`` is the number of rows EP rank ``s``
  sends to global expert ``e``. Every rank holds the same matrix after one tiny all-gather, so every
  offset below is computed locally, on the device, with no host synchronisation.
* **expert-major receive layout** — at the expert's rank, rows are stored ``(local expert, source
  rank, source slot order)``. That is the order in which Megatron's alltoall dispatcher hands rows to
  its experts, and the contiguous per-expert layout grouped GEMMs (and TMA tiles) need.

The reference backend uses these functions to reorder what ``all_to_all`` delivered; the fused
kernels use the same offsets to write rows straight to their final place at the expert's rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from comet_megatron.triton_support import HAVE_TRITON  # without Triton the slots are sorted by PyTorch operators


@dataclass(frozen=True)
class LocalRouting:
    """The token owner's routing after the router, before any communication.

    Attributes:
        num_tokens: ``T``, tokens on this rank.
        topk: routed experts per token.
        token_of_slot: ``int64 [T * topk]``, the token index of each slot (expert-major order).
        expert_of_slot: ``int64 [T * topk]``, the global expert of each slot.
        probs_of_slot: ``[T * topk]``, router probability of each slot, in the router's dtype and
            connected to the router's autograd graph.
        tokens_per_expert: ``int64 [E]``, slots of this rank per global expert (device tensor).
        slots_by_token: ``int64 [T, topk]``, each token's slots ascending, when the routing kernel built them
            (``None`` otherwise: :meth:`slot_of_token` derives them).
    """

    num_tokens: int
    topk: int
    token_of_slot: torch.Tensor
    expert_of_slot: torch.Tensor
    probs_of_slot: torch.Tensor
    tokens_per_expert: torch.Tensor
    slots_by_token: torch.Tensor | None = None

    @property
    def num_slots(self) -> int:
        return self.num_tokens * self.topk

    def slot_of_token(self) -> torch.Tensor:
        """``int64 [T, topk]``: every token's slots, ascending (the order a top-k sum gathers them in)."""
        if self.slots_by_token is not None:
            return self.slots_by_token
        return torch.argsort(self.token_of_slot, stable=True).view(self.num_tokens, self.topk)


def build_local_routing(
    routing_map: torch.Tensor, probs: torch.Tensor, topk: int, use_kernel: bool | None = None
) -> LocalRouting:
    """Slots of a dropless top-k routing, in Megatron's ``permute`` order, without a host sync.

    Args:
        routing_map: ``bool [T, E]``, exactly ``topk`` True entries per row (dropless routing).
        probs: ``float [T, E]``, router probabilities (zero where ``routing_map`` is False).
        topk: experts per token.
        use_kernel: count the slots with two Triton launches (``kernels/routing.py``) instead of sorting with
            PyTorch operators; default: on CUDA tensors when Triton is installed, unless ``COMET_ROUTING_KERNEL=0``.
            Both give identical slots.

    Every token has exactly ``topk`` experts, so the number of slots is static (``T * topk``) and the
    slots can be found with a sort instead of ``masked_select`` (which would wait for the device).
    """
    num_tokens, num_experts = routing_map.shape
    if probs.shape != routing_map.shape:
        raise ValueError(f"probs {tuple(probs.shape)} and routing_map {tuple(routing_map.shape)} differ")
    if use_kernel is None:
        use_kernel = routing_map.is_cuda and HAVE_TRITON and os.environ.get("COMET_ROUTING_KERNEL", "1") != "0"
    if use_kernel:
        return _routing_by_kernel(routing_map, probs, topk)
    device = routing_map.device
    flat_mask = routing_map.t().reshape(-1)  # [E * T], expert-major
    positions = torch.arange(num_experts * num_tokens, device=device)
    sentinel = torch.full_like(positions, num_experts * num_tokens)
    keys = torch.where(flat_mask, positions, sentinel)
    selected = torch.sort(keys).values[: num_tokens * topk]
    token_of_slot = selected % max(num_tokens, 1)
    expert_of_slot = torch.div(selected, max(num_tokens, 1), rounding_mode="floor")
    probs_of_slot = probs.t().reshape(-1).index_select(0, selected)
    tokens_per_expert = routing_map.sum(dim=0, dtype=torch.int64)
    return LocalRouting(
        num_tokens=num_tokens,
        topk=topk,
        token_of_slot=token_of_slot,
        expert_of_slot=expert_of_slot,
        probs_of_slot=probs_of_slot,
        tokens_per_expert=tokens_per_expert,
    )


_ROUTING_BLOCK_ELEMENTS = 4096  # map entries per program of the routing kernels


def _routing_by_kernel(routing_map: torch.Tensor, probs: torch.Tensor, topk: int) -> LocalRouting:
    """:func:`build_local_routing` by the routing kernels (two launches, plus the probabilities' gather)."""
    import triton

    from comet_megatron.kernels.routing import routing_block_counts_kernel, routing_slots_kernel
    from comet_megatron.launcher import launch

    num_tokens, num_experts = routing_map.shape
    device = routing_map.device
    num_slots = num_tokens * topk
    indices = torch.empty(4, num_slots, dtype=torch.int64, device=device)
    tokens_per_expert = torch.empty(num_experts, dtype=torch.int64, device=device)
    e_p2 = triton.next_power_of_2(max(num_experts, 1))
    rows_per_block = max(1, _ROUTING_BLOCK_ELEMENTS // e_p2)
    num_blocks = -(-num_tokens // rows_per_block)
    if num_blocks and num_experts:
        routing_bytes = routing_map.contiguous().view(torch.uint8)
        block_counts = torch.empty(num_blocks, num_experts, dtype=torch.int32, device=device)
        common = dict(BT=rows_per_block, E_P2=e_p2, num_warps=4)
        launch(
            routing_block_counts_kernel, (num_blocks,), routing_bytes, block_counts, num_tokens, num_experts, **common
        )
        launch(
            routing_slots_kernel,
            (num_blocks,),
            routing_bytes,
            block_counts,
            indices[0],
            indices[1],
            indices[2],
            indices[3],
            tokens_per_expert,
            num_tokens,
            num_experts,
            topk,
            num_blocks,
            CB=rows_per_block,  # blocks' counts summed per step: the same entries per step as a map block
            **common,
        )
    else:
        tokens_per_expert.zero_()
    return LocalRouting(
        num_tokens=num_tokens,
        topk=topk,
        token_of_slot=indices[0],
        expert_of_slot=indices[1],
        probs_of_slot=probs.reshape(-1).index_select(0, indices[2]),
        tokens_per_expert=tokens_per_expert,
        slots_by_token=indices[3].view(num_tokens, topk),
    )


def exclusive_cumsum(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``cumsum(x) - x``: the start offset of each segment whose sizes are ``x``."""
    return torch.cumsum(x, dim=dim) - x


def receive_counts(counts: torch.Tensor, ep_rank: int, num_local_experts: int) -> torch.Tensor:
    """``int64 [ep, E_local]``: rows each source rank sends to this rank's local experts."""
    first = ep_rank * num_local_experts
    return counts[:, first : first + num_local_experts]


def source_order(ep: int, rotate: bool, device=None) -> torch.Tensor:
    """``int64 [ep_dest, ep]``: the order of source ranks inside each expert at each destination.

    Megatron's order is ascending source rank. ``rotate`` starts every destination with itself
    (``d, d+1, ..., d-1``): its local rows come first in each expert, so the first M-tiles of every expert
    need no remote data — the layout the fused kernels use to compute local tiles first.
    """
    j = torch.arange(ep, device=device)
    if not rotate:
        return j.expand(ep, ep)
    return (j[:, None] + j[None, :]) % ep


def expert_major_offsets(counts: torch.Tensor, num_local_experts: int, rotate: bool = False) -> torch.Tensor:
    """Start row of every (source rank, local expert) segment in every rank's expert-major buffer.

    Args:
        counts: ``int64 [ep, E]`` counts matrix.
        num_local_experts: ``E_local = E / ep``.
        rotate: order sources inside an expert starting with the destination (see :func:`source_order`).

    Returns:
        ``int64 [ep_dest, ep_src, E_local]``: ``out[d, s, e]`` is the first row, in rank ``d``'s
        expert-major receive buffer, of the rows that rank ``s`` sends to ``d``'s local expert ``e``.
    """
    ep = counts.shape[0]
    per_dest = counts.view(ep, ep, num_local_experts).permute(1, 2, 0)  # [dest, expert, src]
    order = source_order(ep, rotate, counts.device)[:, None, :].expand(ep, num_local_experts, ep)
    in_order = per_dest.gather(2, order)  # [dest, expert, position]
    starts = exclusive_cumsum(in_order.reshape(ep, -1), dim=1).view(ep, num_local_experts, ep)
    by_source = torch.empty_like(starts).scatter_(2, order, starts)  # [dest, expert, src]
    return by_source.permute(0, 2, 1).contiguous()  # [dest, src, expert]


def slot_destination_rows(routing: LocalRouting, counts: torch.Tensor, ep_rank: int, num_local_experts: int):
    """Where every local slot lands at its expert's rank.

    Returns:
        ``(dest_rank, dest_row)``, both ``int64 [T * topk]``: the EP rank owning the slot's expert and
        the row in that rank's expert-major receive buffer.
    """
    expert = routing.expert_of_slot
    dest_rank = torch.div(expert, num_local_experts, rounding_mode="floor")
    local_expert = expert - dest_rank * num_local_experts
    offsets = expert_major_offsets(counts, num_local_experts)[:, ep_rank, :]  # [dest, E_local]
    segment_start = exclusive_cumsum(routing.tokens_per_expert)  # slot index where each expert begins
    index_in_segment = torch.arange(routing.num_slots, device=expert.device) - segment_start[expert]
    dest_row = offsets[dest_rank, local_expert] + index_in_segment
    return dest_rank, dest_row


def rank_major_to_expert_major(
    counts: torch.Tensor, ep_rank: int, num_local_experts: int, num_rows: int, rotate: bool = False
):
    """Index that reorders this rank's receive buffer from rank-major to expert-major.

    ``all_to_all`` delivers rows grouped by source rank, each group already ordered by local expert
    (``(src, expert, row)``); the experts need ``(expert, src, row)`` (sources in :func:`source_order`).

    Args:
        counts: ``int64 [ep, E]`` counts matrix.
        num_rows: rows received in total (known on the host for the all_to_all anyway).
        rotate: the fused kernels' source order.

    Returns:
        ``int64 [num_rows]`` ``dest`` such that ``expert_major[dest[i]] = rank_major[i]``.
    """
    recv = receive_counts(counts, ep_rank, num_local_experts)  # [src, expert]
    flat = recv.reshape(-1)
    segment = torch.repeat_interleave(torch.arange(flat.numel(), device=counts.device), flat, output_size=num_rows)
    rank_major_start = exclusive_cumsum(flat)
    expert_major_start = expert_major_offsets(counts, num_local_experts, rotate)[ep_rank].reshape(-1)
    within = torch.arange(num_rows, device=counts.device) - rank_major_start[segment]
    return expert_major_start[segment] + within


def inverse_permutation(perm: torch.Tensor) -> torch.Tensor:
    """``inv`` with ``inv[perm[i]] = i``."""
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), device=perm.device)
    return inv
