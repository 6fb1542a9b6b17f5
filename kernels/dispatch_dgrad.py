"""Backward of layer1's consumer side: output-gradient dispatch ⊕ fc2 data-gradient ⊕ activation backward.

The mirror of :mod:`dispatch_fc1` with the same work lists: every token owner pushes ``grad_out[token]``
rows with the forward's push units (same destination rows, same flags — only the source tensor differs),
while GEMM programs compute ``dA = dY @ W2`` per expert (``W2[e]`` is ``[H, F]`` = ``[K, N]``: no transpose
copy) and, in the epilogue, the activation's backward from the saved fc1 output ``[gate | linear]`` and the
router probability: ``d_fc1 = [dA·p·linear·act'(gate) | dA·p·act(gate)]`` and the probability gradient
``d_prob = Σ_j dA·act(gate)·linear`` (fp32 atomics across N-tiles into a zeroed ``[R]`` buffer).
"""

import triton
import triton.language as tl

from comet_megatron.kernels.dispatch_fc1 import push_units, ready_tile
from comet_megatron.kernels.tiles import mma


@triton.jit
def _act_and_derivative(x, ACT: tl.constexpr):
    if ACT == 0:  # silu
        s = tl.sigmoid(x)
        return x * s, s * (1.0 + x * (1.0 - s))
    else:  # exact gelu
        cdf = 0.5 * (1.0 + tl.math.erf(x * 0.7071067811865476))
        pdf = 0.3989422804014327 * tl.exp(-0.5 * x * x)
        return x * cdf, cdf + x * pdf


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
    mask = m_mask[:, None] & n_mask[None, :]
    width = F * (2 if GATED else 1)
    prob = tl.load(recv_probs_ptr + rm64, mask=m_mask, other=0.0)
    grad_act = acc.to(tl.bfloat16).to(tl.float32)  # dA is a bf16 tensor in the unfused path
    gate = tl.load(preact_ptr + rm64[:, None] * width + rn[None, :], mask=mask, other=0.0).to(tl.float32)
    act, act_prime = _act_and_derivative(gate, ACT)
    if GATED:
        linear = tl.load(preact_ptr + rm64[:, None] * width + (F + rn)[None, :], mask=mask, other=0.0).to(tl.float32)
        unscaled = act * linear
    else:
        unscaled = act
    tl.atomic_add(d_prob_ptr + rm64, tl.sum(tl.where(mask, grad_act * unscaled, 0.0), axis=1), mask=m_mask)
    grad_unscaled = grad_act * prob[:, None]
    if GATED:
        tl.store(
            d_fc1_ptr + rm64[:, None] * width + rn[None, :],
            (grad_unscaled * linear * act_prime).to(tl.bfloat16),
            mask=mask,
        )
        tl.store(
            d_fc1_ptr + rm64[:, None] * width + (F + rn)[None, :], (grad_unscaled * act).to(tl.bfloat16), mask=mask
        )
    else:
        tl.store(
            d_fc1_ptr + rm64[:, None] * width + rn[None, :], (grad_unscaled * act_prime).to(tl.bfloat16), mask=mask
        )


@triton.jit
def dispatch_dgrad_kernel(
    grad_out_ptr,
    token_of_slot_ptr,
    probs_of_slot_ptr,
    units_ptr,
    num_units,
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
    num_mtiles,
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
):
    pid = tl.program_id(0)
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
            )
            item = tl.atomic_add(queues_ptr + 1, 1)
