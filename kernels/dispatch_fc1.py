"""layer0 = token dispatch ⊕ fc1 ⊕ activation·prob, one persistent kernel per rank.

Two task queues, each a counter in ``queues_ptr`` (the last program to finish zeroes them for the next launch):

* **push units** (this rank as a token owner): the rows it sends to one M-tile of one expert on one
  destination rank. A unit gathers the token rows from the local tokens, **pushes** them (remote stores
  over NVLink) into the destination's expert-major receive buffer with their router probabilities, and
  publishes the unit's flag there. Programs ``[0, N_COMM)`` start on this queue.
* **GEMM tiles** (this rank as an expert owner): an (M-tile, N-tile) of the grouped fc1. A tile waits for
  the flags of every source rank with rows in its M-tile, then computes
  ``act(x @ W_gate^T) * (x @ W_linear^T) * prob`` in its epilogue. All other programs start here, and the
  push programs join once the push queue is empty, so no SM idles after dispatch.

Units and M-tiles are ordered so that the tiles made of local rows (every destination lists its own rows
first in each expert) are computed first — COMET's rescheduling along M — then expert-major, grouped
``GROUP_M`` M-tiles at a time so that weight tiles are reused from L2.

``USE_TMA`` loads A/B tiles with tensor-memory-accelerator descriptors (row strides must be 16-byte
aligned); otherwise masked pointer loads (also the interpreter's path). ``MODE`` (constexpr): 0 runs both
queues (GPU), 1 only pushes, 2 only GEMM tiles — 1 then 2 lets the interpreter, which runs programs one
after another, simulate several ranks in one process.

``GUARDED`` (an early launch, queued before the host has read the counts, into outputs sized from a guess) makes
the launch a no-op — no push, no flag, no tile — unless the plan's verdict ``sizes[2]`` says everything fits
(``kernels/plan.py``); the host then launches again, unguarded, with the same epoch.
"""

import triton
import triton.language as tl

from comet_megatron.kernels.sync import async_proxy_fence, peer_pointer, publish, release_queues, wait_for
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
def push_unit(
    unit_ptr,
    x_ptr,
    token_of_slot_ptr,
    probs_of_slot_ptr,
    recv_table_ptr,
    recv_probs_table_ptr,
    flags_table_ptr,
    epoch,
    my_rank,
    H,
    WS: tl.constexpr,
    MAX_T: tl.constexpr,
    ROWS: tl.constexpr,
    BH: tl.constexpr,
    PEER_ALIGNED: tl.constexpr,
):
    dest = tl.load(unit_ptr)
    expert = tl.load(unit_ptr + 1)
    tile = tl.load(unit_ptr + 2)
    dest_row = tl.load(unit_ptr + 3).to(tl.int64)
    first_slot = tl.load(unit_ptr + 4)
    rows = tl.load(unit_ptr + 5)
    recv_peer = peer_pointer(recv_table_ptr, dest, tl.bfloat16, PEER_ALIGNED)
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


@triton.jit
def push_units(
    queue_ptr,
    num_units,
    units_ptr,
    x_ptr,
    token_of_slot_ptr,
    probs_of_slot_ptr,
    recv_table_ptr,
    recv_probs_table_ptr,
    flags_table_ptr,
    epoch,
    my_rank,
    H,
    WS: tl.constexpr,
    MAX_T: tl.constexpr,
    ROWS: tl.constexpr,
    BH: tl.constexpr,
    PEER_ALIGNED: tl.constexpr,
):
    """A communication program's loop: take push units from the shared queue until none is left."""
    unit = tl.atomic_add(queue_ptr, 1)
    while unit < num_units:
        push_unit(
            units_ptr + unit * 6,
            x_ptr,
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
        unit = tl.atomic_add(queue_ptr, 1)


@triton.jit
def ready_tile(
    item,
    num_mtiles,
    num_n,
    mtiles_ptr,
    src_table_ptr,
    flags_ptr,
    error_ptr,
    epoch,
    WS: tl.constexpr,
    MAX_T: tl.constexpr,
    BM: tl.constexpr,
    GROUP_M: tl.constexpr,
    USE_TMA: tl.constexpr,
    DEBUG: tl.constexpr,
    MAX_SPINS: tl.constexpr,
):
    """The (expert, first row, end row, N-tile) of work item ``item``, once every source rank with rows in
    its M-tile has published them (the forward's and the backward's dispatch GEMMs consume alike)."""
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
    if USE_TMA:
        async_proxy_fence()
    return expert, row0, row1, n


@triton.jit
def _fc1_tile(
    item,
    num_mtiles,
    mtiles_ptr,
    src_table_ptr,
    flags_ptr,
    error_ptr,
    recv_ptr,
    recv_probs_ptr,
    a_desc,
    w1_ptr,
    b_desc,
    act_ptr,
    preact_ptr,
    epoch,
    H,
    F,
    WS: tl.constexpr,
    MAX_T: tl.constexpr,
    GATED: tl.constexpr,
    ACT: tl.constexpr,
    SAVE_PREACT: tl.constexpr,
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
    width = F * (2 if GATED else 1)
    w_row0 = expert * width + n * BN  # first weight row of this N-tile (gate half; linear half is F further)
    acc_gate = tl.zeros((BM, BN), dtype=tl.float32)
    acc_lin = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, H, BK):
        if USE_TMA:
            a = a_desc.load([row0, k0])
            acc_gate = tl.dot(a, b_desc.load([w_row0, k0]).T, acc_gate)
            if GATED:
                acc_lin = tl.dot(a, b_desc.load([w_row0 + F, k0]).T, acc_lin)
        else:
            rk = k0 + tl.arange(0, BK)
            k_mask = rk < H
            a = tl.load(recv_ptr + rm64[:, None] * H + rk[None, :], mask=m_mask[:, None] & k_mask[None, :], other=0.0)
            b_mask = k_mask[:, None] & n_mask[None, :]
            w_rows = (w_row0 + tl.arange(0, BN)).to(tl.int64)
            b_gate = tl.load(w1_ptr + w_rows[None, :] * H + rk[:, None], mask=b_mask, other=0.0)
            acc_gate = mma(a, b_gate, acc_gate, UPCAST)
            if GATED:
                b_lin = tl.load(w1_ptr + (w_rows + F)[None, :] * H + rk[:, None], mask=b_mask, other=0.0)
                acc_lin = mma(a, b_lin, acc_lin, UPCAST)
    out_mask = m_mask[:, None] & n_mask[None, :]
    # round like the unfused path (fc1 output is bf16), then the activation in fp32
    gate = acc_gate.to(tl.bfloat16)
    if SAVE_PREACT:
        tl.store(preact_ptr + rm64[:, None] * width + rn[None, :], gate, mask=out_mask)
        if GATED:
            tl.store(preact_ptr + rm64[:, None] * width + (F + rn)[None, :], acc_lin.to(tl.bfloat16), mask=out_mask)
    prob = tl.load(recv_probs_ptr + rm64, mask=m_mask, other=0.0)
    activated = _activation(gate.to(tl.float32), ACT)
    if GATED:
        activated = activated * acc_lin.to(tl.bfloat16).to(tl.float32)
    activated = activated * prob[:, None]
    tl.store(act_ptr + rm64[:, None] * F + rn[None, :], activated.to(tl.bfloat16), mask=out_mask)


@triton.jit(do_not_specialize=["epoch"])  # one compilation for every epoch (no ==1, %16 variants)
def dispatch_fc1_kernel(
    # communication role (this rank owns the tokens)
    x_ptr,
    token_of_slot_ptr,
    probs_of_slot_ptr,
    units_ptr,
    sizes_ptr,  # [3] int32: units, M-tiles, early-launch verdict (written by the plan step on the device)
    recv_table_ptr,
    recv_probs_table_ptr,
    flags_table_ptr,
    # GEMM role (this rank owns the experts)
    recv_ptr,
    recv_probs_ptr,
    flags_ptr,
    a_desc,
    w1_ptr,
    b_desc,
    act_ptr,
    preact_ptr,
    mtiles_ptr,
    src_table_ptr,
    queues_ptr,
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
    USE_TMA: tl.constexpr,
    DEBUG: tl.constexpr,
    MAX_SPINS: tl.constexpr,
    UPCAST: tl.constexpr,
    PEER_ALIGNED: tl.constexpr,
    GUARDED: tl.constexpr = False,
):
    pid = tl.program_id(0)
    num_units = tl.load(sizes_ptr)
    num_mtiles = tl.load(sizes_ptr + 1)
    if GUARDED:  # no work at all unless the verdict allows it; the queues still end at zero (release_queues)
        allowed = tl.load(sizes_ptr + 2) != 0
        num_units = tl.where(allowed, num_units, 0)
        num_mtiles = tl.where(allowed, num_mtiles, 0)
    if (pid < N_COMM) & (MODE != 2):
        push_units(
            queues_ptr,
            num_units,
            units_ptr,
            x_ptr,
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
            _fc1_tile(
                item,
                num_mtiles,
                mtiles_ptr,
                src_table_ptr,
                flags_ptr,
                error_ptr,
                recv_ptr,
                recv_probs_ptr,
                a_desc,
                w1_ptr,
                b_desc,
                act_ptr,
                preact_ptr,
                epoch,
                H,
                F,
                WS,
                MAX_T,
                GATED,
                ACT,
                SAVE_PREACT,
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
    release_queues(queues_ptr)
