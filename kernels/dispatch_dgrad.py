"""Backward of layer1's consumer side: output-gradient dispatch ⊕ fc2 data-gradient ⊕ activation backward.

The mirror of :mod:`dispatch_fc1` with the same work lists: every token owner pushes ``grad_out[token]``
rows with the forward's push units (same destination rows, same flags — only the source tensor differs),
while GEMM programs compute ``dA = dY @ W2`` per expert (``W2[e]`` is ``[H, F]`` = ``[K, N]``: no transpose
copy) and, in the epilogue, the activation's backward from the saved fc1 output ``[gate | linear]`` and the
router probability (:mod:`activation_backward`; ``d_prob`` by fp32 atomics across N-tiles into a zeroed
``[R]`` buffer). With ``FUSE_ACT`` off the epilogue only stores ``dA`` (bf16) into ``d_fc1``'s last ``F``
columns and :func:`activation_backward_kernel` finishes in place: a light epilogue keeps the GEMM near
its peak where ``K = H`` is short and the tiles many (Mixtral: 54% of the matmul rate with the fused epilogue).
"""

import triton
import triton.language as tl

from comet_megatron.kernels.activation_backward import activation_backward_block
from comet_megatron.kernels.dispatch_fc1 import push_units, ready_tile
from comet_megatron.kernels.sync import release_queues
from comet_megatron.kernels.tiles import column_halves, mma


@triton.jit
def _fc2_dgrad_tile(
    item,
    num_mtiles,
    mtiles_ptr,
    src_table_ptr,
    flags_ptr,
    error_ptr,
    recv_ptr,
    recv_probs_ptr,
    a_desc,
    w2_ptr,
    b_desc,
    preact_ptr,
    d_fc1_ptr,
    d_prob_ptr,
    epoch,
    H,
    F,
    WS: tl.constexpr,
    MAX_T: tl.constexpr,
    GATED: tl.constexpr,
    ACT: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    GROUP_M: tl.constexpr,
    USE_TMA: tl.constexpr,
    DEBUG: tl.constexpr,
    MAX_SPINS: tl.constexpr,
    UPCAST: tl.constexpr,
    EPI_SPLIT: tl.constexpr,
    FUSE_ACT: tl.constexpr,
):
    expert, row0, row1, n = ready_tile(
        item,
        num_mtiles,
        tl.cdiv(F, BN),
        mtiles_ptr,
        src_table_ptr,
        flags_ptr,
        error_ptr,
        epoch,
        WS,
        MAX_T,
        BM,
        GROUP_M,
        USE_TMA,
        DEBUG,
        MAX_SPINS,
    )
    rm = row0 + tl.arange(0, BM)
    m_mask = rm < row1
    rm64 = rm.to(tl.int64)
    rn = n * BN + tl.arange(0, BN)
    n_mask = rn < F
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, H, BK):
        if USE_TMA:
            acc = tl.dot(a_desc.load([row0, k0]), b_desc.load([expert * H + k0, n * BN]), acc)
        else:
            rk = k0 + tl.arange(0, BK)
            k_mask = rk < H
            a = tl.load(recv_ptr + rm64[:, None] * H + rk[None, :], mask=m_mask[:, None] & k_mask[None, :], other=0.0)
            b = tl.load(
                w2_ptr + (expert * H + rk).to(tl.int64)[:, None] * F + rn[None, :],
                mask=k_mask[:, None] & n_mask[None, :],
                other=0.0,
            )
            acc = mma(a, b, acc, UPCAST)
    prob = tl.load(recv_probs_ptr + rm64, mask=m_mask, other=0.0)
    if EPI_SPLIT == 2:
        # one half of the columns at a time: a 256-wide tile's epilogue then needs no more registers than a
        # 128-wide one's (Triton materialises the whole tile's operands at once otherwise, and spills)
        lo, hi = column_halves(acc, BM, BN)
        d_prob = _dgrad_epilogue(
            lo, rm64, m_mask, prob, n * BN, preact_ptr, d_fc1_ptr, F, GATED, ACT, FUSE_ACT, BN // 2
        )
        d_prob += _dgrad_epilogue(
            hi, rm64, m_mask, prob, n * BN + BN // 2, preact_ptr, d_fc1_ptr, F, GATED, ACT, FUSE_ACT, BN // 2
        )
    else:
        d_prob = _dgrad_epilogue(acc, rm64, m_mask, prob, n * BN, preact_ptr, d_fc1_ptr, F, GATED, ACT, FUSE_ACT, BN)
    if FUSE_ACT:
        tl.atomic_add(d_prob_ptr + rm64, d_prob, mask=m_mask)


@triton.jit
def _dgrad_epilogue(
    acc,
    rm64,
    m_mask,
    prob,
    col0,
    preact_ptr,
    d_fc1_ptr,
    F,
    GATED: tl.constexpr,
    ACT: tl.constexpr,
    FUSE_ACT: tl.constexpr,
    BN: tl.constexpr,
):
    """Columns ``[col0, col0 + BN)`` of ``dA``: with ``FUSE_ACT`` their activation backward (stores ``d_fc1``,
    returns each row's share of ``d_prob``); otherwise ``dA`` itself, in bf16, into ``d_fc1``'s last ``F``
    columns for :func:`activation_backward_kernel` (returns zeros)."""
    rn = col0 + tl.arange(0, BN)
    grad_act = acc.to(tl.bfloat16)  # dA is a bf16 tensor in the unfused path
    if FUSE_ACT:
        return activation_backward_block(
            grad_act.to(tl.float32), rm64, m_mask, rn, prob, preact_ptr, d_fc1_ptr, F, GATED, ACT
        )
    else:
        width = F * (2 if GATED else 1)
        mask = m_mask[:, None] & (rn < F)[None, :]
        tl.store(d_fc1_ptr + rm64[:, None] * width + (width - F + rn)[None, :], grad_act, mask=mask)
        return tl.zeros_like(prob)


@triton.jit(do_not_specialize=["epoch"])  # one compilation for every epoch (no ==1, %16 variants)
def dispatch_dgrad_kernel(
    grad_out_ptr,
    token_of_slot_ptr,
    probs_of_slot_ptr,
    units_ptr,
    sizes_ptr,  # [2] int32: units, M-tiles (written by the plan step on the device)
    recv_table_ptr,
    recv_probs_table_ptr,
    flags_table_ptr,
    recv_ptr,
    recv_probs_ptr,
    flags_ptr,
    a_desc,
    w2_ptr,
    b_desc,
    preact_ptr,
    d_fc1_ptr,
    d_prob_ptr,
    mtiles_ptr,
    src_table_ptr,
    queues_ptr,
    error_ptr,
    epoch,
    my_rank,
    H,
    F,
    WS: tl.constexpr,
    MAX_T: tl.constexpr,
    N_COMM: tl.constexpr,
    GATED: tl.constexpr,
    ACT: tl.constexpr,
    MODE: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    GROUP_M: tl.constexpr,
    ROWS: tl.constexpr,
    BH: tl.constexpr,
    USE_TMA: tl.constexpr,
    DEBUG: tl.constexpr,
    MAX_SPINS: tl.constexpr,
    UPCAST: tl.constexpr,
    EPI_SPLIT: tl.constexpr,
    FUSE_ACT: tl.constexpr,
    PEER_ALIGNED: tl.constexpr,
):
    pid = tl.program_id(0)
    num_units = tl.load(sizes_ptr)
    num_mtiles = tl.load(sizes_ptr + 1)
    if (pid < N_COMM) & (MODE != 2):
        push_units(
            queues_ptr,
            num_units,
            units_ptr,
            grad_out_ptr,
            token_of_slot_ptr,
            probs_of_slot_ptr,
            recv_table_ptr,
            recv_probs_table_ptr,
            flags_table_ptr,
            epoch,
            my_rank,
            H,
            WS,
            MAX_T,
            ROWS,
            BH,
            PEER_ALIGNED,
        )
    if MODE != 1:
        num_items = num_mtiles * tl.cdiv(F, BN)
        item = tl.atomic_add(queues_ptr + 1, 1)
        while item < num_items:
            _fc2_dgrad_tile(
                item,
                num_mtiles,
                mtiles_ptr,
                src_table_ptr,
                flags_ptr,
                error_ptr,
                recv_ptr,
                recv_probs_ptr,
                a_desc,
                w2_ptr,
                b_desc,
                preact_ptr,
                d_fc1_ptr,
                d_prob_ptr,
                epoch,
                H,
                F,
                WS,
                MAX_T,
                GATED,
                ACT,
                BM,
                BN,
                BK,
                GROUP_M,
                USE_TMA,
                DEBUG,
                MAX_SPINS,
                UPCAST,
                EPI_SPLIT,
                FUSE_ACT,
            )
            item = tl.atomic_add(queues_ptr + 1, 1)
    release_queues(queues_ptr)
