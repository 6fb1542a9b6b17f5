"""The fused kernels' work lists for one layer call, derived from the ``[ep, E]`` counts matrix.

Two halves:

* :class:`HostPlan` — what the host needs (rows this rank receives, rows per local expert, the backward's
  all_to_all splits, every rank's receive size), a few numpy operations on the counts read once per layer call
  (as Megatron's alltoall path reads them); everything past the receive size is computed only when first asked.
* the tables the kernels walk — this rank's communication units, its M-tiles and the per-source tables they use to
  find flags and owners. :func:`device_plan` builds them on the GPU with one small kernel queued *before* the host
  reads the counts, so the host's work between that read (which drains the GPU's queue) and the first fused kernel
  is only the receive size and the launch: in training the host runs Python several times slower than in a
  benchmark, and the GPU idles for all of it. :func:`build_plan` is the same computation in numpy — the
  specification the kernel is tested against entry for entry, and the tables of the interpreter simulations.
  All offsets come from :mod:`comet_megatron.routing` with the rotated source order, the same functions the
  reference backend uses with Megatron's order.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import triton

from comet_megatron.routing import expert_major_offsets


def _exclusive_cumsum(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.cumsum(x, axis=axis) - x


_TABLE_ALIGN = 4  # int32 elements: every packed table starts 16-byte aligned, as the kernels' pointers were


def _table_shapes(units_rows: int, mtiles_rows: int, ep: int, num_local_experts: int) -> dict[str, tuple[int, ...]]:
    """The kernels' tables, in the order they are packed, and their shapes."""
    return {
        "units": (units_rows, 6),
        "mtiles": (mtiles_rows, 4),
        "src_table": (num_local_experts, ep, 2),
        "src_first_slot": (num_local_experts, ep),
        "tokens_per_expert": (num_local_experts,),
        "sizes": (3,),  # units, M-tiles, early-launch verdict (kernels/plan.py)
    }


def _aligned_length(n: int) -> int:
    """Elements a table of ``n`` int32 takes in a packed buffer, so that the next one starts 16-byte aligned."""
    return -(-max(n, 1) // _TABLE_ALIGN) * _TABLE_ALIGN


def _packed_size(shapes: dict[str, tuple[int, ...]]) -> int:
    """Length of the one int32 buffer holding every table of ``shapes``."""
    return sum(_aligned_length(math.prod(shape)) for shape in shapes.values())


def _packed_views(buffer: torch.Tensor, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Views of ``buffer`` (``_packed_size(shapes)`` int32 elements) shaped as ``shapes``."""
    views, start = {}, 0
    for name, shape in shapes.items():
        n = math.prod(shape)
        views[name] = buffer[start : start + n].view(shape)
        start += _aligned_length(n)
    return views


class HostPlan:
    """This rank's share of the counts matrix, as the host needs it.

    Attributes:
        tokens_per_expert: ``int64 [E_local]`` (CPU) rows per local expert here.
        recv_rows: rows this rank receives (expert-major buffer size).
        max_tokens_per_rank: tokens of the rank with the most (the workspace's growth decision, identical on
            every rank).
        recv_rows_per_rank / send_splits / recv_splits: every rank's receive size, rows sent to / received from
            each rank (the backward's all_to_all); computed when first asked.
    """

    def __init__(self, counts_host: torch.Tensor, ep_rank: int, num_local_experts: int, topk: int = 1):
        self.counts = counts_host.numpy() if counts_host.dtype == torch.int64 else counts_host.long().numpy()
        self.ep_rank, self.num_local_experts, self.topk = ep_rank, num_local_experts, topk
        lo = ep_rank * num_local_experts
        self._mine = self.counts[:, lo : lo + num_local_experts]  # [src, e]
        self.tokens_per_expert = torch.from_numpy(self._mine.sum(0))
        self.recv_rows = int(self._mine.sum())

    @property
    def max_tokens_per_rank(self) -> int:
        return int(self.counts.sum(1).max()) // self.topk

    @functools.cached_property
    def recv_rows_per_rank(self) -> list[int]:
        ep = self.counts.shape[0]
        return self.counts.reshape(ep, ep, self.num_local_experts).sum(axis=(0, 2)).tolist()

    @functools.cached_property
    def send_splits(self) -> list[int]:
        return self.counts[self.ep_rank].reshape(-1, self.num_local_experts).sum(1).tolist()

    @functools.cached_property
    def recv_splits(self) -> list[int]:
        return self._mine.sum(1).tolist()


class FusedPlan(HostPlan):
    """:class:`HostPlan` plus the kernels' tables, built on the host (CPU int32 tensors) by :func:`build_plan`.

    Attributes:
        units: ``[U, 6]`` (dest rank, local expert at dest, M-tile at dest, dest row, first slot, rows):
            the rows this rank pushes, one unit per (destination expert M-tile), in the order the destinations
            compute: own rank first, then the others in rotated order, each expert-major; without
            ``own_rows_first`` expert-major across destinations (own rank first within each expert).
        mtiles: ``[M, 4]`` (local expert, first row, end row, tile index in the expert): tiles holding only
            local rows first, then the rest; expert-major within each group (one group without
            ``own_rows_first``).
        src_table: ``[E_local, ep, 2]`` (row offset inside the expert, rows) of each source rank here.
        src_first_slot: ``[E_local, ep]`` first slot, at the source rank, of its rows for each local expert.
        max_tiles_per_expert: flag-array stride (``MAX_T``) the plan was built for.
    """

    def __init__(
        self,
        counts_host,
        ep_rank,
        num_local_experts,
        *,
        units,
        mtiles,
        src_table,
        src_first_slot,
        max_tiles_per_expert,
        topk: int = 1,
    ):
        super().__init__(counts_host, ep_rank, num_local_experts, topk)
        self.units, self.mtiles = units, mtiles
        self.src_table, self.src_first_slot = src_table, src_first_slot
        self.max_tiles_per_expert = max_tiles_per_expert

    def device_tables(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The tables :func:`device_plan` returns — ``units``, ``mtiles``, ``src_table``, ``src_first_slot``,
        ``tokens_per_expert`` and ``sizes`` (``[3]``: units, M-tiles, 1) — as int32 tensors on ``device``, moved in
        one asynchronous copy from pinned host memory (CUDA)."""
        shapes = _table_shapes(self.units.shape[0], self.mtiles.shape[0], self.counts.shape[0], self.num_local_experts)
        pinned = device.type == "cuda"
        host = torch.empty(_packed_size(shapes), dtype=torch.int32, pin_memory=pinned)
        for name, view in _packed_views(host, shapes).items():
            values = [self.units.shape[0], self.mtiles.shape[0], 1] if name == "sizes" else getattr(self, name).numpy()
            view.numpy()[...] = values
        return _packed_views(host.to(device, non_blocking=pinned), shapes)


def table_capacities(tokens: int, topk: int, ep: int, num_local_experts: int, block_m: int) -> tuple[int, int]:
    """Rows of the ``units`` and ``mtiles`` tables :func:`device_plan` allocates for a rank with ``tokens`` tokens.

    Units are exact bounds (every unit covers rows of this rank's ``tokens * topk`` slots, at most two partial
    tiles per destination expert). M-tiles assume no source rank has more tokens than this one (true in
    training, where every rank holds ``seq * micro_batch`` tokens); :func:`device_plan` checks and rebuilds."""
    units = tokens * topk // block_m + 2 * ep * num_local_experts
    mtiles = ep * tokens * min(topk, num_local_experts) // block_m + num_local_experts
    return units, mtiles


_NO_LIMIT = (1 << 31) - 1


def device_plan(
    counts: torch.Tensor,
    ep_rank: int,
    num_local_experts: int,
    block_m: int,
    tokens: int,
    topk: int,
    *,
    rows_limit: int = _NO_LIMIT,
    tokens_limit: int = _NO_LIMIT,
    tiles_limit: int = _NO_LIMIT,
    own_rows_first: bool = True,
) -> dict[str, torch.Tensor]:
    """The kernels' tables (as :meth:`FusedPlan.device_tables` returns them) built on ``counts``' device from the
    ``[ep, E]`` counts matrix there, without reading it on the host. ``units`` and ``mtiles`` have capacity rows
    (:func:`table_capacities`); ``sizes`` holds how many are used and, third, whether an early (guarded) layer0
    launch may run: the tables fit, this rank receives at most ``rows_limit`` rows, no rank holds more than
    ``tokens_limit`` tokens and no expert needs more than ``tiles_limit`` M-tiles. Call :func:`check_device_plan`
    once the host has the counts."""
    from comet_megatron.kernels.plan import build_plan_kernel
    from comet_megatron.launcher import launch

    ep = counts.shape[0]
    units_cap, mtiles_cap = table_capacities(tokens, topk, ep, num_local_experts, block_m)
    shapes = _table_shapes(units_cap, mtiles_cap, ep, num_local_experts)
    tables = _packed_views(torch.empty(_packed_size(shapes), dtype=torch.int32, device=counts.device), shapes)
    launch(
        build_plan_kernel,
        (1,),
        counts.contiguous(),
        tables["units"],
        tables["mtiles"],
        tables["src_table"],
        tables["src_first_slot"],
        tables["tokens_per_expert"],
        tables["sizes"],
        ep_rank,
        units_cap,
        mtiles_cap,
        min(rows_limit, _NO_LIMIT),
        min(tokens_limit, _NO_LIMIT),
        min(tiles_limit, _NO_LIMIT),
        topk,
        ep,
        num_local_experts,
        block_m,
        EP_P2=triton.next_power_of_2(ep),
        E_P2=triton.next_power_of_2(ep * num_local_experts),
        BLOCK=32,
        OWN_FIRST=own_rows_first,
        num_warps=4,
    )
    return tables


def check_device_plan(
    tables: dict[str, torch.Tensor],
    plan: HostPlan,
    counts: torch.Tensor,
    block_m: int,
    tokens: int,
    max_tiles_per_expert: int,
    own_rows_first: bool = True,
) -> dict[str, torch.Tensor]:
    """``tables`` if :func:`device_plan`'s capacities held for these counts, else tables rebuilt with room: a source
    rank brought more tokens than ``tokens`` (M-tiles), or this rank sent more rows than ``tokens * topk`` (units) —
    rare outside training, and then correct, only slower. Raises, as :func:`build_plan` does, when an expert needs
    more M-tiles than the workspace's flags hold."""
    tiles = -(-plan.tokens_per_expert.numpy() // block_m)
    _check_tiles(tiles, block_m, max_tiles_per_expert)
    sent = int(plan.counts[plan.ep_rank].sum())
    if int(tiles.sum()) <= tables["mtiles"].shape[0] and sent <= tokens * plan.topk:
        return tables
    tokens = max(tokens, plan.max_tokens_per_rank, -(-sent // plan.topk))
    return device_plan(
        counts, plan.ep_rank, plan.num_local_experts, block_m, tokens, plan.topk, own_rows_first=own_rows_first
    )


def _check_tiles(tiles_per_expert: np.ndarray, block_m: int, max_tiles_per_expert: int) -> None:
    if tiles_per_expert.size and int(tiles_per_expert.max()) > max_tiles_per_expert:
        raise ValueError(
            f"an expert needs {int(tiles_per_expert.max())} M-tiles of {block_m} rows but the workspace's flags hold "
            f"{max_tiles_per_expert} per expert: use KernelConfig.block_m >= 64 (CometBuffer sizes flags for that)"
        )


def build_plan(
    counts: torch.Tensor,
    ep_rank: int,
    num_local_experts: int,
    block_m: int,
    max_tiles_per_expert: int,
    topk: int = 1,
    own_rows_first: bool = True,
):
    """Work lists for ``ep_rank`` from the host ``int64 [ep, E]`` counts matrix (``topk``: slots per token, for
    :attr:`HostPlan.max_tokens_per_rank`; ``own_rows_first``: :attr:`KernelConfig.own_rows_first`)."""
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
    # In the order the destinations compute. Own rows first: destinations in rotated order (own rows first), each
    # expert-major. Without own_rows_first every destination computes expert-major over local and remote rows, so
    # the rows of its first experts must arrive first: expert-major across destinations (own rank first in each).
    rotated = (dest - me) % ep
    major, minor = (rotated, expert) if own_rows_first else (expert, rotated)
    order = np.argsort(major * (1 << 40) + minor * (1 << 20) + tile, kind="stable")
    units = units[order]

    # --- this rank as an expert owner: M-tiles and source tables ---
    tiles_per_expert = -(-rows_at[me] // block_m)
    _check_tiles(tiles_per_expert, block_m, max_tiles_per_expert)
    mt_expert = np.repeat(np.arange(e_local), tiles_per_expert)
    mt_tile = np.arange(mt_expert.size) - _exclusive_cumsum(tiles_per_expert)[mt_expert]
    mt_row0 = expert_start[me, mt_expert] + mt_tile * block_m
    mt_row1 = np.minimum(mt_row0 + block_m, expert_start[me, mt_expert] + rows_at[me, mt_expert])
    mtiles = np.stack([mt_expert, mt_row0, mt_row1, mt_tile], axis=1).reshape(-1, 4)
    # Tiles made only of this rank's own rows (first in each expert: rotated order) go first — they need no
    # remote data; then the others, each group expert-major so that grouped tiles share weight tiles. Without
    # own_rows_first: one group, expert-major.
    local_rows = per_dest[me, me]  # [e]
    needs_remote = (mt_row1 - expert_start[me, mt_expert]) > local_rows[mt_expert]
    needs_remote &= own_rows_first
    mtiles = mtiles[np.argsort(needs_remote * (1 << 40) + mt_expert * (1 << 20) + mt_tile, kind="stable")]

    src_counts = per_dest[:, me, :].T  # [e, src]
    src_table = np.stack([within[me].T, src_counts], axis=2)  # [e, src, 2]
    slot_start = _exclusive_cumsum(c, axis=1)  # [src, E] first slot of each global expert at src
    src_first_slot = slot_start[:, me * e_local : (me + 1) * e_local].T  # [e, src]

    def table(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int32))

    return FusedPlan(
        counts_t,
        me,
        e_local,
        units=table(units),
        mtiles=table(mtiles),
        src_table=table(src_table),
        src_first_slot=table(src_first_slot),
        max_tiles_per_expert=max_tiles_per_expert,
        topk=topk,
    )
