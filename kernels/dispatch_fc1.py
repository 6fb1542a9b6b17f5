"""layer0 = token dispatch ⊕ fc1 ⊕ activation·prob, one persistent kernel per rank.

Programs ``[0, N_COMM)`` are *communication* programs of this rank as a token owner: each takes a work
unit — the rows it sends to one M-tile of one expert on one destination rank — gathers the token rows
from its local tokens, **pushes** them (remote stores over NVLink) into the destination's expert-major
receive buffer together with their router probabilities, and publishes the unit's flag there.
Programs ``[N_COMM, grid)`` are *GEMM* programs of this rank as an expert owner: each takes an
(M-tile, N-tile) of the grouped fc1, waits for the flags of every source rank with rows in the M-tile,
and computes ``act(x @ W_gate^T) * (x @ W_linear^T) * prob`` in its epilogue.

Units and M-tiles come ordered tile-index-major and every destination lists its own rows first in each
expert, so the tiles made of local rows are ready (and computed) first — COMET's rescheduling along M.

``MODE`` (constexpr): 0 runs both roles (GPU), 1 only communication, 2 only GEMM — 1 then 2 lets the
interpreter (programs run one after another) simulate several ranks in one process.
"""

import triton
import triton.language as tl

from comet_megatron.kernels.sync import peer_pointer, publish, wait_for
from comet_megatron.kernels.tiles import grouped_tile, mma

UNIT_FIELDS = 6  # dest, local expert, tile, dest row, first slot, rows
MTILE_FIELDS = 4  # local expert, first row, end row, tile index within the expert


@triton.jit
def _activation(x, ACT: tl.constexpr):
    if ACT == 0:  # silu
        return x * tl.sigmoid(x)
    else:  # exact gelu
        return 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))


@triton.jit
def dispatch_fc1_kernel(
    # communication role (this rank owns the tokens)
    x_ptr,
    token_of_slot_ptr,
    probs_of_slot_ptr,
    units_ptr,
    num_units,
    recv_table_ptr,
    recv_probs_table_ptr,
    flags_table_ptr,
    # GEMM role (this rank owns the experts)
    recv_ptr,
    recv_probs_ptr,
    flags_ptr,
    w1_ptr,
    act_ptr,
    preact_ptr,
    mtiles_ptr,
    num_mtiles,
    src_table_ptr,
    error_ptr,
    # sizes
    epoch,
    my_rank,
    H,
    F,
    WS: tl.constexpr,
    MAX_T: tl.constexpr,
    N_COMM: tl.constexpr,
    GATED: tl.constexpr,
    ACT: tl.constexpr,
    SAVE_PREACT: tl.constexpr,
    MODE: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    GROUP_M: tl.constexpr,
    ROWS: tl.constexpr,
    BH: tl.constexpr,
    DEBUG: tl.constexpr,
    MAX_SPINS: tl.constexpr,
    UPCAST: tl.constexpr,
):
    pid = tl.program_id(0)
    num_programs = tl.num_programs(0)
    if pid < N_COMM:
        if MODE != 2:
            for u in range(pid, num_units, N_COMM):
                unit = units_ptr + u * 6
                dest = tl.load(unit)
                expert = tl.load(unit + 1)
                tile = tl.load(unit + 2)
                dest_row = tl.load(unit + 3).to(tl.int64)
                first_slot = tl.load(unit + 4)
                rows = tl.load(unit + 5)
                recv_peer = peer_pointer(recv_table_ptr, dest, tl.bfloat16)
                probs_peer = peer_pointer(recv_probs_table_ptr, dest, tl.float32)
                for r0 in range(0, rows, ROWS):
                    r = r0 + tl.arange(0, ROWS)
                    row_mask = r < rows
                    token = tl.load(token_of_slot_ptr + first_slot + r, mask=row_mask, other=0).to(tl.int64)
                    prob = tl.load(probs_of_slot_ptr + first_slot + r, mask=row_mask, other=0.0)
                    tl.store(probs_peer + dest_row + r, prob, mask=row_mask)
                    for h0 in range(0, H, BH):
                        cols = h0 + tl.arange(0, BH)
                        mask = row_mask[:, None] & (cols < H)[None, :]
                        vals = tl.load(x_ptr + token[:, None] * H + cols[None, :], mask=mask)
                        tl.store(recv_peer + (dest_row + r)[:, None] * H + cols[None, :], vals, mask=mask)
                flag_peer = peer_pointer(flags_table_ptr, dest, tl.int32)
                publish(flag_peer + (expert * MAX_T + tile) * WS + my_rank, epoch)
    else:
        if MODE != 1:
            num_n = tl.cdiv(F, BN)
            for item in range(pid - N_COMM, num_mtiles * num_n, num_programs - N_COMM):
                mtile, n = grouped_tile(item, num_mtiles, num_n, GROUP_M)
                expert = tl.load(mtiles_ptr + mtile * 4)
                row0 = tl.load(mtiles_ptr + mtile * 4 + 1)
                row1 = tl.load(mtiles_ptr + mtile * 4 + 2)
                tile = tl.load(mtiles_ptr + mtile * 4 + 3)
                for s in tl.static_range(WS):
                    offset = tl.load(src_table_ptr + (expert * WS + s) * 2)
                    count = tl.load(src_table_ptr + (expert * WS + s) * 2 + 1)
                    if (count > 0) & (offset < (tile + 1) * BM) & (offset + count > tile * BM):
                        wait_for(flags_ptr + (expert * MAX_T + tile) * WS + s, epoch, error_ptr, DEBUG, MAX_SPINS)
                rm = row0 + tl.arange(0, BM)
                m_mask = rm < row1
                rm64 = rm.to(tl.int64)
                rn = n * BN + tl.arange(0, BN)
                n_mask = rn < F
                w_expert = w1_ptr + expert.to(tl.int64) * (F * (2 if GATED else 1)) * H
                acc_gate = tl.zeros((BM, BN), dtype=tl.float32)
                acc_lin = tl.zeros((BM, BN), dtype=tl.float32)
                for k0 in range(0, H, BK):
                    rk = k0 + tl.arange(0, BK)
                    k_mask = rk < H
                    a = tl.load(
                        recv_ptr + rm64[:, None] * H + rk[None, :], mask=m_mask[:, None] & k_mask[None, :], other=0.0
                    )
                    b_mask = k_mask[:, None] & n_mask[None, :]
                    b_gate = tl.load(w_expert + rn[None, :].to(tl.int64) * H + rk[:, None], mask=b_mask, other=0.0)
                    acc_gate = mma(a, b_gate, acc_gate, UPCAST)
                    if GATED:
                        b_lin = tl.load(
                            w_expert + (F + rn[None, :]).to(tl.int64) * H + rk[:, None], mask=b_mask, other=0.0
                        )
                        acc_lin = mma(a, b_lin, acc_lin, UPCAST)
                out_mask = m_mask[:, None] & n_mask[None, :]
                # round like the unfused path (fc1 output is bf16), then the activation in fp32
                gate = acc_gate.to(tl.bfloat16)
                if SAVE_PREACT:
                    width = F * (2 if GATED else 1)
                    tl.store(preact_ptr + rm64[:, None] * width + rn[None, :], gate, mask=out_mask)
                    if GATED:
                        tl.store(
                            preact_ptr + rm64[:, None] * width + (F + rn)[None, :],
                            acc_lin.to(tl.bfloat16),
                            mask=out_mask,
                        )
                prob = tl.load(recv_probs_ptr + rm64, mask=m_mask, other=0.0)
                activated = _activation(gate.to(tl.float32), ACT)
                if GATED:
                    activated = activated * acc_lin.to(tl.bfloat16).to(tl.float32)
                activated = activated * prob[:, None]
                tl.store(act_ptr + rm64[:, None] * F + rn[None, :], activated.to(tl.bfloat16), mask=out_mask)
