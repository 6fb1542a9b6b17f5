"""The fused kernels' work lists for one layer call, derived from the counts matrix.

Built on the host from the ``[ep, E]`` counts matrix (read once per layer call, as Megatron's alltoall
path does): the exact receive size of every rank (exact allocations, a buffer-growth decision every
rank takes identically), this rank's communication units, its M-tiles and the per-source tables the
kernels use to find flags and owners. All offsets come from :mod:`comet_megatron.routing` with the
rotated source order, the same functions the reference backend uses with Megatron's order.

This runs on the host between the counts read (which drains the GPU's queue) and the first kernel launch, so
the GPU idles for as long as it takes: it is numpy (one torch call for the shared offsets), not dozens of
small torch CPU operators, and :meth:`FusedPlan.device_tables` moves every table in one pinned copy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from comet_megatron.routing import expert_major_offsets


def _exclusive_cumsum(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.cumsum(x, axis=axis) - x


_TABLE_ALIGN = 4  # int32 elements: every packed table starts 16-byte aligned, as the kernels' pointers were


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

    def device_tables(self, device: torch.device) -> dict[str, torch.Tensor]:
        """``units``, ``mtiles``, ``src_table``, ``src_first_slot`` and ``tokens_per_expert`` as int32 tensors
        on ``device``, moved in one asynchronous copy from pinned host memory (CUDA) — one host-to-device
        transfer per layer call instead of five pageable ones."""
        names = ("units", "mtiles", "src_table", "src_first_slot", "tokens_per_expert")
        arrays = [getattr(self, n).numpy().astype(np.int32, copy=False).reshape(-1) for n in names]
        offsets, total = [], 0
        for a in arrays:
            offsets.append(total)
            total += -(-max(a.size, 1) // _TABLE_ALIGN) * _TABLE_ALIGN
        pinned = device.type == "cuda"
        host = torch.empty(total, dtype=torch.int32, pin_memory=pinned)
        flat = host.numpy()
        for a, off in zip(arrays, offsets):
            flat[off : off + a.size] = a
        packed = host.to(device, non_blocking=pinned)
        return {n: packed[off : off + a.size].view(getattr(self, n).shape) for n, a, off in zip(names, arrays, offsets)}


def build_plan(counts: torch.Tensor, ep_rank: int, num_local_experts: int, block_m: int, max_tiles_per_expert: int):
    """Work lists for ``ep_rank`` from the host ``int64 [ep, E]`` counts matrix."""
    counts_t = counts.to("cpu", torch.int64)
    ep = counts_t.shape[0]
    e_local = num_local_experts
    me = ep_rank
    starts = expert_major_offsets(counts_t, e_local, rotate=True).numpy()  # [dest, src, e] absolute rows
    c = counts_t.numpy()
    per_dest = c.reshape(ep, ep, e_local)  # [src, dest, e]
    rows_at = per_dest.sum(0)  # [dest, e]
    expert_start = _exclusive_cumsum(rows_at, axis=1)  # [dest, e]
    within = starts - expert_start[:, None, :]  # [dest, src, e] offset inside the expert

    # --- this rank as a token owner: units ---
    my_counts = per_dest[me].reshape(-1)  # [dest * e]
    my_within = within[:, me, :].reshape(-1)  # [dest * e]
    first_tile = my_within // block_m
    last_tile = (my_within + my_counts - 1) // block_m
    n_units = np.where(my_counts > 0, last_tile - first_tile + 1, 0)
    seg = np.repeat(np.arange(ep * e_local), n_units)
    k = np.arange(seg.size) - _exclusive_cumsum(n_units)[seg]
    dest = seg // e_local
    expert = seg % e_local
    tile = first_tile[seg] + k
    lo = np.maximum(my_within[seg], tile * block_m)
    hi = np.minimum(my_within[seg] + my_counts[seg], (tile + 1) * block_m)
    my_slot_start = _exclusive_cumsum(c[me])  # first slot of each global expert in my slots
    first_slot = my_slot_start[dest * e_local + expert] + (lo - my_within[seg])
    dest_row = expert_start[dest, expert] + lo
    units = np.stack([dest, expert, tile, dest_row, first_slot, hi - lo], axis=1).reshape(-1, 6)
    # destinations in rotated order (own rows first), then in the order the destination computes: by expert
    order = np.argsort(((dest - me) % ep) * (1 << 40) + expert * (1 << 20) + tile, kind="stable")
    units = units[order]

    # --- this rank as an expert owner: M-tiles and source tables ---
    tiles_per_expert = -(-rows_at[me] // block_m)
    if tiles_per_expert.size and int(tiles_per_expert.max()) > max_tiles_per_expert:
        raise ValueError(
            f"an expert needs {int(tiles_per_expert.max())} M-tiles of {block_m} rows but the workspace's flags hold "
            f"{max_tiles_per_expert} per expert: use KernelConfig.block_m >= 64 (CometBuffer sizes flags for that)"
        )
    mt_expert = np.repeat(np.arange(e_local), tiles_per_expert)
    mt_tile = np.arange(mt_expert.size) - _exclusive_cumsum(tiles_per_expert)[mt_expert]
    mt_row0 = expert_start[me, mt_expert] + mt_tile * block_m
    mt_row1 = np.minimum(mt_row0 + block_m, expert_start[me, mt_expert] + rows_at[me, mt_expert])
    mtiles = np.stack([mt_expert, mt_row0, mt_row1, mt_tile], axis=1).reshape(-1, 4)
    # Tiles made only of this rank's own rows (first in each expert: rotated order) go first — they need no
    # remote data; then the others, each group expert-major so that grouped tiles share weight tiles.
    local_rows = per_dest[me, me]  # [e]
    needs_remote = (mt_row1 - expert_start[me, mt_expert]) > local_rows[mt_expert]
    mtiles = mtiles[np.argsort(needs_remote * (1 << 40) + mt_expert * (1 << 20) + mt_tile, kind="stable")]

    src_counts = per_dest[:, me, :].T  # [e, src]
    src_table = np.stack([within[me].T, src_counts], axis=2)  # [e, src, 2]
    slot_start = _exclusive_cumsum(c, axis=1)  # [src, E] first slot of each global expert at src
    src_first_slot = slot_start[:, me * e_local : (me + 1) * e_local].T  # [e, src]

    def table(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int32))

    return FusedPlan(
        units=table(units),
        mtiles=table(mtiles),
        src_table=table(src_table),
        src_first_slot=table(src_first_slot),
        recv_rows_per_rank=rows_at.sum(1).tolist(),
        tokens_per_expert=torch.from_numpy(rows_at[me].copy()),
        send_splits=per_dest[me].sum(1).tolist(),
        recv_splits=per_dest[:, me, :].sum(1).tolist(),
        max_tiles_per_expert=max_tiles_per_expert,
    )
