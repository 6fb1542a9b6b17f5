"""layer1 = fc2 ⊕ combine, and the owner-side top-k reduce.

``fc2_combine_kernel``: a persistent grouped GEMM (TMA tile loads when ``USE_TMA``) over the
expert-major activated rows — ``[R, K] @ W[e]`` with ``W[e]`` stored ``[N, K]`` (fc2's ``[H, F]``) or, with
``W_KN``, ``[K, N]`` (the backward's fc1 data-gradient reads fc1's ``[2F, H]`` so: no transpose copy).
Its epilogue **pushes** each finished tile straight to the ranks that own the rows' tokens — row ``r`` of local
expert ``e`` came from source rank ``s`` (the segment it lies in) and lands in ``s``'s combine buffer at
``s``'s slot for it. Every finished tile's bytes leave while the next tiles compute. When the last
program of the grid finishes, it publishes ``done[my_rank] = epoch`` on every rank. With ``PUSH_PROBS`` (the
backward's fc1 data-gradient) the epilogue of each M-tile's first column block also stores the rows' router-
probability gradients (fp32, expert-major ``d_prob``) at the same owner slots of the owners' ``combine_probs``:
they travel with the rows and are covered by the same done flag, so no separate exchange synchronizes the ranks.

``combine_reduce_kernel``: at the token owner, waits for ``done`` from every rank, then sums each token's
``topk`` slot rows in fp32, in a fixed (expert) order — deterministic — and writes the bf16 output.
The combine buffer is double-buffered by epoch parity, so a fast peer's next call never overwrites rows
this rank is still reducing.
"""

import triton
import triton.language as tl

from comet_megatron.kernels.sync import peer_pointer, publish, wait_for
from comet_megatron.kernels.tiles import column_halves, grouped_tile, mma


@triton.jit
def _push_rows(acc, row_start, m_mask, col0, H, BN: tl.constexpr):
    """Store the columns ``[col0, col0 + BN)`` of finished rows at their owners' slots (``row_start``: per-row
    pointers into the owners' combine buffers)."""
    rn = col0 + tl.arange(0, BN)
    tl.store(row_start[:, None] + rn[None, :], acc.to(tl.bfloat16), mask=m_mask[:, None] & (rn < H)[None, :])


@triton.jit(do_not_specialize=["epoch"])  # one compilation for every epoch (no ==1, %16 variants)
def fc2_combine_kernel(
    act_ptr,
    a_desc,
    w2_ptr,
    b_desc,
    mtiles_ptr,
    sizes_ptr,  # [2] int32: units, M-tiles (written by the plan step on the device)
    src_table_ptr,
    src_first_slot_ptr,
    combine_table_ptr,
    combine_offset,
    flags_table_ptr,
    done_offset,
    counter_ptr,
    d_prob_ptr,
    combine_probs_table_ptr,
    combine_probs_offset,
    epoch,
    my_rank,
    H,
    F,
    WS: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    GROUP_M: tl.constexpr,
    USE_TMA: tl.constexpr,
    W_KN: tl.constexpr,
    UPCAST: tl.constexpr,
    EPI_SPLIT: tl.constexpr,
    FLATTEN: tl.constexpr = False,
    PUSH_PROBS: tl.constexpr = False,
    PEER_ALIGNED: tl.constexpr = False,
):
    pid = tl.program_id(0)
    num_programs = tl.num_programs(0)
    num_mtiles = tl.load(sizes_ptr + 1)
    num_n = tl.cdiv(H, BN)
    # FLATTEN fuses the tile loop with its K loop (the K trip count is the same for every tile), so the software
    # pipeline issues the next tile's first loads while this tile's epilogue pushes its rows. Safe here because no
    # tile waits on a flag: the rows' activations come from an earlier kernel on the same stream.
    for item in tl.range(pid, num_mtiles * num_n, num_programs, flatten=FLATTEN):
        mtile, n = grouped_tile(item, num_mtiles, num_n, GROUP_M)
        expert = tl.load(mtiles_ptr + mtile * 4)
        row0 = tl.load(mtiles_ptr + mtile * 4 + 1)
        row1 = tl.load(mtiles_ptr + mtile * 4 + 2)
        tile = tl.load(mtiles_ptr + mtile * 4 + 3)
        rm = row0 + tl.arange(0, BM)
        m_mask = rm < row1
        rm64 = rm.to(tl.int64)
        rn = n * BN + tl.arange(0, BN)
        n_mask = rn < H
        w_expert = w2_ptr + expert.to(tl.int64) * H * F
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for k0 in range(0, F, BK):
            if USE_TMA:
                a = a_desc.load([row0, k0])
                if W_KN:
                    acc = tl.dot(a, b_desc.load([expert * F + k0, n * BN]), acc)
                else:
                    acc = tl.dot(a, b_desc.load([expert * H + n * BN, k0]).T, acc)
            else:
                rk = k0 + tl.arange(0, BK)
                k_mask = rk < F
                a = tl.load(
                    act_ptr + rm64[:, None] * F + rk[None, :], mask=m_mask[:, None] & k_mask[None, :], other=0.0
                )
                b_mask = k_mask[:, None] & n_mask[None, :]
                if W_KN:
                    b = tl.load(
                        w2_ptr + (expert * F + rk).to(tl.int64)[:, None] * H + rn[None, :], mask=b_mask, other=0.0
                    )
                else:
                    b = tl.load(w_expert + rn[None, :].to(tl.int64) * F + rk[:, None], mask=b_mask, other=0.0)
                acc = mma(a, b, acc, UPCAST)
        # which rank owns each row's token, and which of its slots the row is
        row_in_expert = tile * BM + tl.arange(0, BM)
        owner = tl.zeros((BM,), dtype=tl.int32)
        slot = tl.zeros((BM,), dtype=tl.int64)
        for s in tl.static_range(WS):
            offset = tl.load(src_table_ptr + (expert * WS + s) * 2)
            count = tl.load(src_table_ptr + (expert * WS + s) * 2 + 1)
            first = tl.load(src_first_slot_ptr + expert * WS + s).to(tl.int64)
            inside = (row_in_expert >= offset) & (row_in_expert < offset + count)
            owner = tl.where(inside, s, owner)
            slot = tl.where(inside, first + row_in_expert - offset, slot)
        row_start = peer_pointer(combine_table_ptr, owner, tl.bfloat16, PEER_ALIGNED) + combine_offset + slot * H
        if EPI_SPLIT == 2:  # half the columns at a time: fewer live registers (see dispatch_dgrad)
            lo, hi = column_halves(acc, BM, BN)
            _push_rows(lo, row_start, m_mask, n * BN, H, BN // 2)
            _push_rows(hi, row_start, m_mask, n * BN + BN // 2, H, BN // 2)
        else:
            _push_rows(acc, row_start, m_mask, n * BN, H, BN)
        if PUSH_PROBS:  # once per row (first column block): its probability gradient to the same owner slot
            # a mask, not an `if n == 0` block: Triton 3.6 cannot lower a data-dependent branch in a flattened loop
            first_block = m_mask & ((tl.zeros((BM,), dtype=tl.int32) + n) == 0)  # [BM] (interpreter: no scalar)
            d_prob = tl.load(d_prob_ptr + rm64, mask=first_block, other=0.0)
            probs_base = tl.load(combine_probs_table_ptr + owner, mask=first_block, other=0)
            probs_at = probs_base.to(tl.pointer_type(tl.float32)) + combine_probs_offset + slot
            tl.store(probs_at, d_prob, mask=first_block)
    # the last program to finish tells every owner that this rank's rows have all been written
    tl.debug_barrier()
    finished = tl.atomic_add(counter_ptr, 1, sem="acq_rel", scope="sys")
    if finished == num_programs - 1:
        for s in tl.static_range(WS):
            publish(peer_pointer(flags_table_ptr, s, tl.int32) + done_offset + my_rank, epoch)
        tl.atomic_xchg(counter_ptr, 0)


@triton.jit(do_not_specialize=["epoch"])  # one compilation for every epoch (no ==1, %16 variants)
def combine_reduce_kernel(
    combine_ptr,
    slot_of_token_ptr,
    out_ptr,
    flags_ptr,
    done_offset,
    error_ptr,
    epoch,
    T,
    H,
    TOPK: tl.constexpr,
    WS: tl.constexpr,
    BT: tl.constexpr,
    BH: tl.constexpr,
    DEBUG: tl.constexpr,
    MAX_SPINS: tl.constexpr,
):
    for s in tl.static_range(WS):
        wait_for(flags_ptr + done_offset + s, epoch, error_ptr, DEBUG, MAX_SPINS)
    rt = tl.program_id(0) * BT + tl.arange(0, BT)
    t_mask = rt < T
    cols = tl.program_id(1) * BH + tl.arange(0, BH)
    mask = t_mask[:, None] & (cols < H)[None, :]
    acc = tl.zeros((BT, BH), dtype=tl.float32)
    for j in tl.static_range(TOPK):
        slot = tl.load(slot_of_token_ptr + rt.to(tl.int64) * TOPK + j, mask=t_mask, other=0).to(tl.int64)
        acc += tl.load(combine_ptr + slot[:, None] * H + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + rt.to(tl.int64)[:, None] * H + cols[None, :], acc.to(tl.bfloat16), mask=mask)
