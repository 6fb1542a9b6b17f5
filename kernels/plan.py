"""The fused kernels' work lists built on the device from the ``[ep, E]`` counts matrix.

The same tables as :func:`comet_megatron.fused_plan.build_plan` (the host specification this kernel is tested
against, entry for entry), computed by one program so that they can be queued before the host reads the counts:
the host then only needs the receive size to allocate before it launches the first fused kernel.

``sizes[2]`` is the verdict on an **early launch** of layer0 (queued before the host has read the counts, into
outputs sized from a guess): 1 when the tables fit their capacities, this rank receives at most ``rows_limit``
rows, no rank holds more than ``tokens_limit`` tokens and no expert needs more than ``tiles_limit`` M-tiles (the
workspace's capacities: every peer's buffers and flags fit).
A guarded launch reads it and does nothing when it is 0; the host reads it with the counts and launches again.
"""

import triton
import triton.language as tl


@triton.jit
def _column(counts_ptr, src, g, E, EP):
    """``counts[:, g]`` over the sources ``src`` (padded with zeros)."""
    return tl.load(counts_ptr + src * E + g, mask=src < EP, other=0).to(tl.int32)


@triton.jit
def _rotated_prefix(col, src, dest, EP):
    """Per source, the rows of the sources before it in ``dest``'s order (``dest, dest+1, ..., dest-1``)."""
    position = (src - dest + EP) % EP
    earlier = position[None, :] < position[:, None]  # [src, other source]
    return tl.sum(tl.where(earlier, col[None, :], 0), axis=1)


@triton.jit
def build_plan_kernel(
    counts_ptr,  # [EP, E] int32 or int64
    units_ptr,  # [UNITS_CAP, 6] int32
    mtiles_ptr,  # [MTILES_CAP, 4] int32
    src_table_ptr,  # [EL, EP, 2] int32
    src_first_slot_ptr,  # [EL, EP] int32
    tokens_per_expert_ptr,  # [EL] int32
    sizes_ptr,  # [3] int32: units, M-tiles (those past a capacity are counted, not written), early-launch verdict
    me,
    units_cap,
    mtiles_cap,
    rows_limit,
    tokens_limit,
    tiles_limit,
    topk,
    EP,  # sizes are runtime values: one compilation serves every EP size and expert count up to the padded sizes
    EL,
    BM,
    EP_P2: tl.constexpr,
    E_P2: tl.constexpr,
    BLOCK: tl.constexpr,
    OWN_FIRST: tl.constexpr,  # own rows first (False: expert-major), as KernelConfig.own_rows_first
):
    E = EP * EL
    src = tl.arange(0, EP_P2)
    g_all = tl.arange(0, E_P2)
    block = tl.load(
        counts_ptr + src[:, None] * E + g_all[None, :], mask=(src[:, None] < EP) & (g_all[None, :] < E), other=0
    ).to(tl.int32)
    slot_start = tl.cumsum(block, axis=1) - block  # [src, g] first slot of global expert g at src
    my_slot_start = tl.sum(tl.where(src[:, None] == me, slot_start, 0), axis=0)  # [g]
    k = tl.arange(0, BLOCK)

    # --- this rank as a token owner: one unit per (destination expert M-tile) its rows touch, in the order the
    # destinations compute: own rank first, each destination expert-major (OWN_FIRST), or expert-major across the
    # destinations, own rank first within each expert ---
    totals = tl.sum(block, axis=0)  # [g] rows of global expert g at its owner
    if OWN_FIRST:
        n_outer = EP
        n_inner = EL
    else:
        n_outer = EL
        n_inner = EP
    u = 0
    for outer in range(n_outer):
        for inner in range(n_inner):
            if OWN_FIRST:
                j = outer
                e = inner
            else:
                j = inner
                e = outer
            dest = (me + j) % EP
            g = dest * EL + e
            # first row of expert e in dest's expert-major buffer
            expert_start = tl.sum(tl.where((g_all >= dest * EL) & (g_all < g), totals, 0))
            col = _column(counts_ptr, src, g, E, EP)
            within = tl.sum(tl.where(src == me, _rotated_prefix(col, src, dest, EP), 0))
            rows = tl.sum(tl.where(src == me, col, 0))
            first_tile = within // BM
            n = tl.where(rows > 0, (within + rows - 1) // BM - first_tile + 1, 0)
            first_slot = tl.sum(tl.where(g_all == g, my_slot_start, 0))
            for t0 in range(0, n, BLOCK):
                tile = first_tile + t0 + k
                lo = tl.maximum(within, tile * BM)
                hi = tl.minimum(within + rows, (tile + 1) * BM)
                row = u + t0 + k
                ok = (t0 + k < n) & (row < units_cap)
                out = units_ptr + row * 6
                tl.store(out + 0, tl.zeros_like(k) + dest, mask=ok)
                tl.store(out + 1, tl.zeros_like(k) + e, mask=ok)
                tl.store(out + 2, tile, mask=ok)
                tl.store(out + 3, expert_start + lo, mask=ok)
                tl.store(out + 4, first_slot + lo - within, mask=ok)
                tl.store(out + 5, hi - lo, mask=ok)
            u += n

    # --- this rank as an expert owner: M-tiles made only of its own rows first, then the rest, expert-major (or all
    # expert-major: every tile in the first group) ---
    m = 0
    for group in range(2):
        expert_start = 0
        for e in range(EL):
            g = me * EL + e
            col = _column(counts_ptr, src, g, E, EP)
            rows = tl.sum(col)
            local = tl.sum(tl.where(src == me, col, 0))  # own rows come first in the expert (rotated order)
            tiles = (rows + BM - 1) // BM
            if OWN_FIRST:
                local_tiles = tl.where(local == rows, tiles, local // BM)
            else:
                local_tiles = tiles
            t_lo = tl.where(group == 0, 0, local_tiles)
            t_hi = tl.where(group == 0, local_tiles, tiles)
            for t0 in range(0, t_hi - t_lo, BLOCK):
                tile = t_lo + t0 + k
                row = m + t0 + k
                ok = (tile < t_hi) & (row < mtiles_cap)
                row0 = expert_start + tile * BM
                out = mtiles_ptr + row * 4
                tl.store(out + 0, tl.zeros_like(k) + e, mask=ok)
                tl.store(out + 1, row0, mask=ok)
                tl.store(out + 2, tl.minimum(row0 + BM, expert_start + rows), mask=ok)
                tl.store(out + 3, tile, mask=ok)
            m += t_hi - t_lo
            if group == 0:
                tl.store(tokens_per_expert_ptr + e, rows)
                at = src_table_ptr + (e * EP + src) * 2
                tl.store(at, _rotated_prefix(col, src, me, EP), mask=src < EP)
                tl.store(at + 1, col, mask=src < EP)
                first = tl.sum(tl.where(g_all[None, :] == g, slot_start, 0), axis=1)
                tl.store(src_first_slot_ptr + e * EP + src, first, mask=src < EP)
            expert_start += rows
    tl.store(sizes_ptr, u)
    tl.store(sizes_ptr + 1, m)
    mine = (g_all >= me * EL) & (g_all < (me + 1) * EL)
    my_rows = tl.sum(tl.where(mine, totals, 0))
    most_tokens = tl.max(tl.sum(block, axis=1)) // topk  # the workspace's growth decision (HostPlan)
    most_tiles = tl.max((totals + BM - 1) // BM)  # any expert's, at any rank: the flags' stride
    fits = (u <= units_cap) & (m <= mtiles_cap) & (my_rows <= rows_limit) & (most_tokens <= tokens_limit)
    fits = fits & (most_tiles <= tiles_limit)
    tl.store(sizes_ptr + 2, fits.to(tl.int32))
