"""The fused kernels' work lists for one layer call, derived from the counts matrix.

Built on the host from the ``[ep, E]`` counts matrix (read once per layer call, as Megatron's alltoall
path does): the exact receive size of every rank (exact allocations, a buffer-growth decision every
rank takes identically), this rank's communication units, its M-tiles and the per-source tables the
kernels use to find flags and owners. All offsets come from :mod:`comet_megatron.routing` with the
rotated source order, the same functions the reference backend uses with Megatron's order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from comet_megatron.routing import exclusive_cumsum, expert_major_offsets


def _ceil_div(a: torch.Tensor | int, b: int):
    return (a + b - 1) // b


@dataclass(frozen=True)
class FusedPlan:
    """Host-side (CPU int32 tensors) work lists of one rank for one layer call.

    Attributes:
        units: ``[U, 6]`` (dest rank, local expert at dest, M-tile at dest, dest row, first slot, rows):
            the rows this rank pushes, one unit per (destination expert M-tile), own rank first, then the
            others in rotated order, each expert-major (the order the destination computes in).
        mtiles: ``[M, 4]`` (local expert, first row, end row, tile index in the expert): tiles holding only
            local rows first, then the rest; expert-major within each group.
        src_table: ``[E_local, ep, 2]`` (row offset inside the expert, rows) of each source rank here.
        src_first_slot: ``[E_local, ep]`` first slot, at the source rank, of its rows for each local expert.
        recv_rows_per_rank: rows each rank receives (expert-major buffer size).
        tokens_per_expert: ``[E_local]`` rows per local expert here.
        send_splits / recv_splits: rows sent to / received from each rank (the backward's all_to_all).
        max_tiles_per_expert: flag-array stride (``MAX_T``) the plan was built for.
    """

    units: torch.Tensor
    mtiles: torch.Tensor
    src_table: torch.Tensor
    src_first_slot: torch.Tensor
    recv_rows_per_rank: list[int]
    tokens_per_expert: torch.Tensor
    send_splits: list[int]
    recv_splits: list[int]
    max_tiles_per_expert: int

    @property
    def recv_rows(self) -> int:
        return int(self.tokens_per_expert.sum())


def build_plan(counts: torch.Tensor, ep_rank: int, num_local_experts: int, block_m: int, max_tiles_per_expert: int):
    """Work lists for ``ep_rank`` from the host ``int64 [ep, E]`` counts matrix."""
    counts = counts.to("cpu", torch.int64)
    ep = counts.shape[0]
    e_local = num_local_experts
    me = ep_rank
    starts = expert_major_offsets(counts, e_local, rotate=True)  # [dest, src, e] absolute rows
    per_dest = counts.view(ep, ep, e_local)  # [src, dest, e]
    rows_at = per_dest.sum(0)  # [dest, e]
    expert_start = exclusive_cumsum(rows_at, dim=1)  # [dest, e]
    within = starts - expert_start[:, None, :]  # [dest, src, e] offset inside the expert

    # --- this rank as a token owner: units ---
    my_counts = per_dest[me]  # [dest, e]
    my_within = within[:, me, :]  # [dest, e]
    first_tile = my_within // block_m
    last_tile = (my_within + my_counts - 1) // block_m
    n_units = torch.where(my_counts > 0, last_tile - first_tile + 1, torch.zeros_like(my_counts))
    seg = torch.repeat_interleave(torch.arange(ep * e_local), n_units.reshape(-1))
    k = torch.arange(seg.numel()) - exclusive_cumsum(n_units.reshape(-1))[seg]
    dest = seg // e_local
    expert = seg % e_local
    tile = first_tile.reshape(-1)[seg] + k
    lo = torch.maximum(my_within.reshape(-1)[seg], tile * block_m)
    hi = torch.minimum(my_within.reshape(-1)[seg] + my_counts.reshape(-1)[seg], (tile + 1) * block_m)
    my_slot_start = exclusive_cumsum(counts[me])  # first slot of each global expert in my slots
    first_slot = my_slot_start[dest * e_local + expert] + (lo - my_within.reshape(-1)[seg])
    dest_row = expert_start[dest, expert] + lo
    units = torch.stack([dest, expert, tile, dest_row, first_slot, hi - lo], dim=1)
    # destinations in rotated order (own rows first), then in the order the destination computes: by expert
    order = torch.argsort(((dest - me) % ep) * (1 << 40) + expert * (1 << 20) + tile, stable=True)
    units = units[order]

    # --- this rank as an expert owner: M-tiles and source tables ---
    tiles_per_expert = _ceil_div(rows_at[me], block_m)
    if int(tiles_per_expert.max()) > max_tiles_per_expert:
        raise ValueError(
            f"an expert needs {int(tiles_per_expert.max())} M-tiles of {block_m} rows but the workspace's flags hold "
            f"{max_tiles_per_expert} per expert: use KernelConfig.block_m >= 64 (CometBuffer sizes flags for that)"
        )
    mt_expert = torch.repeat_interleave(torch.arange(e_local), tiles_per_expert)
    mt_tile = torch.arange(mt_expert.numel()) - exclusive_cumsum(tiles_per_expert)[mt_expert]
    mt_row0 = expert_start[me, mt_expert] + mt_tile * block_m
    mt_row1 = torch.minimum(mt_row0 + block_m, expert_start[me, mt_expert] + rows_at[me, mt_expert])
    mtiles = torch.stack([mt_expert, mt_row0, mt_row1, mt_tile], dim=1)
    # Tiles made only of this rank's own rows (first in each expert: rotated order) go first — they need no
    # remote data; then the others, each group expert-major so that grouped tiles share weight tiles.
    local_rows = per_dest[me, me]  # [e]
    needs_remote = (mt_row1 - expert_start[me, mt_expert]) > local_rows[mt_expert]
    mtiles = mtiles[torch.argsort(needs_remote.long() * (1 << 40) + mt_expert * (1 << 20) + mt_tile, stable=True)]

    src_counts = per_dest[:, me, :].t()  # [e, src]
    src_table = torch.stack([within[me].t(), src_counts], dim=2)  # [e, src, 2]
    slot_start = exclusive_cumsum(counts, dim=1)  # [src, E] first slot of each global expert at src
    src_first_slot = slot_start[:, me * e_local : (me + 1) * e_local].t()  # [e, src]

    return FusedPlan(
        units=units.to(torch.int32).contiguous(),
        mtiles=mtiles.to(torch.int32).contiguous(),
        src_table=src_table.to(torch.int32).contiguous(),
        src_first_slot=src_first_slot.to(torch.int32).contiguous(),
        recv_rows_per_rank=rows_at.sum(1).tolist(),
        tokens_per_expert=rows_at[me].clone(),
        send_splits=my_counts.sum(1).tolist(),
        recv_splits=per_dest[:, me, :].sum(1).tolist(),
        max_tiles_per_expert=max_tiles_per_expert,
    )
