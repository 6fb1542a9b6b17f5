"""Probe: the fc1 GEMM core as a warp-specialized Gluon kernel (Triton 3.6, sm_90).

Question it answers: does a producer/consumer kernel — one loader warp issuing the TMA loads of the next tiles
while two consumer warpgroups run the wgmma main loop and the SwiGLU·prob epilogue — close the gap between our
Triton fc1 core (software-pipelined, no warp specialization: Triton 3.6 has none for sm_90) and cuBLAS?

The kernel computes exactly what ``dispatch_fc1_kernel``'s GEMM programs compute (``MODE=2``): for each
(M-tile, N-tile) of the expert-major receive buffer, ``gate = x @ W_gate^T``, ``lin = x @ W_lin^T`` (rounded to
bf16 like the unfused path), ``act = silu(gate) * lin * prob``, with ``[gate | lin]`` saved for the backward.
Tiles come from the plan's ``mtiles`` table ``[expert, first row, end row, tile]`` in the same grouped order
(``kernels/tiles.grouped_tile``), assigned statically (``item = pid + i * programs``) so that the loader and the
consumers walk the same sequence without exchanging tile ids. No flags are waited on: this is the GEMM core
alone, as ``bench_gemm_core``'s ``fc1`` row times it.

Not imported by the package: Gluon's API is experimental and differs between Triton releases.

Measured (session 13, one H200, EP=2 simulated; ``benchmarks/results/s13/``, ``notes/perf-log.md``): correct — act
and preact bit-identical to the Triton kernel's on all five issue cases, for every epilogue — but only 0-7% faster
(means of 8 rounds, Gluon / Triton core: Qwen2-57B 0.93, Qwen1.5 0.94, Mixtral 0.98, DSv3 0.99, Phi 1.01) and
still 7-19% behind ``torch._grouped_mm``; neither TMA stores (``EPILOGUE=2``) nor an
epilogue warpgroup of its own (``EPILOGUE=3``) moved it. ``EPILOGUE=0`` is no main-loop bound: with the accumulators
unused, ptxas keeps 2 of the 8 HGMMA instructions (``cuobjdump -sass``), hence its impossible ~925 TFLOP/s.

Session 17 (``benchmarks/results/s17/``): ``EPILOGUE=4`` (one element stored per half-tile, every HGMMA kept) is as
slow as ``EPILOGUE=1`` -- the main loop itself is 10-13% behind cuBLAS; ``fused_b`` (one m64n256 wgmma over a
``[gate | linear]`` B tile) is 7-15% slower than two n128 wgmmas;
``group_m`` 16 / 32 and BK 128 x 2 stages gain nothing.

  python benchmarks/probes/gluon_ws_fc1.py --cases mixtral-8x7b --tokens 4096 \
      --variants '[{"epilogue": 1}, {"epilogue": 3, "stages": 3}]' --out DIR
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)

from comet_megatron.kernels.tiles import grouped_tile


@gluon.jit
def _load_partition(
    a_desc, w_desc, bufs, bars, mtiles_ptr, num_mtiles, probs_ptr, act_ptr, preact_ptr, F, H, GROUP_M: gl.constexpr
):
    a_bufs, g_bufs, l_bufs, _ = bufs
    ready_bars, empty_bars, _ = bars
    STAGES: gl.constexpr = a_bufs.shape[0]
    BN: gl.constexpr = w_desc.block_type.shape[0]
    BK: gl.constexpr = a_desc.block_type.shape[1]
    nbytes: gl.constexpr = a_desc.block_type.nbytes + 2 * w_desc.block_type.nbytes
    num_n = gl.cdiv(F, BN)
    num_items = num_mtiles * num_n
    step = 0
    for item in range(gl.program_id(0), num_items, gl.num_programs(0)):
        mtile, n = grouped_tile(item, num_mtiles, num_n, GROUP_M)
        expert = gl.load(mtiles_ptr + mtile * 4)
        row0 = gl.load(mtiles_ptr + mtile * 4 + 1)
        w_row0 = expert * (2 * F) + n * BN
        for k in range(0, H, BK):
            s = step % STAGES
            # a stage is free once the consumers released its previous use (barriers start in phase 0, so the
            # first pass over the ring waits on the completed "phase -1")
            mbarrier.wait(empty_bars.index(s), ((step // STAGES) & 1) ^ 1)
            bar = ready_bars.index(s)
            mbarrier.expect(bar, nbytes)
            tma.async_copy_global_to_shared(a_desc, [row0, k], bar, a_bufs.index(s))
            if g_bufs.shape[1] == BN:
                tma.async_copy_global_to_shared(w_desc, [w_row0, k], bar, g_bufs.index(s))
                tma.async_copy_global_to_shared(w_desc, [w_row0 + F, k], bar, l_bufs.index(s))
            else:  # FUSED_B: gate rows, then linear rows, in one [2 BN, BK] tile read by one n256 wgmma
                tma.async_copy_global_to_shared(w_desc, [w_row0, k], bar, g_bufs.index(s).slice(0, BN))
                tma.async_copy_global_to_shared(w_desc, [w_row0 + F, k], bar, g_bufs.index(s).slice(BN, BN))
            step += 1


@gluon.jit
def _swiglu_prob(gate, lin, prob):
    g32 = gate.to(gl.float32)
    return (g32 / (1.0 + gl.exp(-g32)) * lin.to(gl.float32) * prob[:, None]).to(gl.bfloat16)


@gluon.jit
def _epilogue_tma(acc_g, acc_l, c_smem, act_desc, preact_desc, probs_ptr, row0, n, F,
                  BM: gl.constexpr, BN: gl.constexpr, acc_layout: gl.constexpr):  # fmt: skip
    gate = acc_g.to(gl.bfloat16)
    lin = acc_l.to(gl.bfloat16)
    prob = gl.load(probs_ptr + (row0 + gl.arange(0, BM, layout=gl.SliceLayout(1, acc_layout))).to(gl.int64))
    activated = _swiglu_prob(gate, lin, prob)
    tma.store_wait(0)  # the previous tile's last store has read the staging buffer
    c_smem.store(gate)
    fence_async_shared()
    tma.async_copy_shared_to_global(preact_desc, [row0, n * BN], c_smem)
    tma.store_wait(0)
    c_smem.store(lin)
    fence_async_shared()
    tma.async_copy_shared_to_global(preact_desc, [row0, F + n * BN], c_smem)
    tma.store_wait(0)
    c_smem.store(activated)
    fence_async_shared()
    tma.async_copy_shared_to_global(act_desc, [row0, n * BN], c_smem)


@gluon.jit
def _store_rows(gate, lin, rows, cols, row1, F, probs_ptr, act_ptr, preact_ptr):
    """Masked stores of one block of a tile (``rows``, ``cols`` in ``gate``'s layout): ``[gate | lin]`` into preact,
    ``silu(gate) * lin * prob`` into act; rows from ``row1`` on belong to the next expert."""
    row_ok = rows < row1
    mask = row_ok[:, None] & (cols < F)[None, :]
    rows64 = rows.to(gl.int64)
    pre_off = rows64[:, None] * (2 * F) + cols[None, :]
    gl.store(preact_ptr + pre_off, gate, mask=mask)
    gl.store(preact_ptr + pre_off + F, lin, mask=mask)
    prob = gl.load(probs_ptr + rows64, mask=row_ok, other=0.0)
    gl.store(act_ptr + rows64[:, None] * F + cols[None, :], _swiglu_prob(gate, lin, prob), mask=mask)


@gluon.jit
def _epilogue_masked(acc_g, acc_l, probs_ptr, act_ptr, preact_ptr, row0, row1, n, F,
                     BM: gl.constexpr, BN: gl.constexpr, out_layout: gl.constexpr):  # fmt: skip
    # with out_layout = the accumulator's layout the conversion is a no-op: stores straight from the MMA registers
    gate = gl.convert_layout(acc_g.to(gl.bfloat16), out_layout)
    lin = gl.convert_layout(acc_l.to(gl.bfloat16), out_layout)
    rows = row0 + gl.arange(0, BM, layout=gl.SliceLayout(1, out_layout))
    cols = n * BN + gl.arange(0, BN, layout=gl.SliceLayout(0, out_layout))
    _store_rows(gate, lin, rows, cols, row1, F, probs_ptr, act_ptr, preact_ptr)


@gluon.jit
def _epilogue_bound(acc, act_ptr, row0, n, BN: gl.constexpr, acc_layout: gl.constexpr):
    """EPILOGUE 4, a main-loop bound: store one element per BN columns of the tile (two per tile) so that every
    wgmma's accumulator stays live (ptxas dropped 6 of 8 HGMMAs when nothing was stored) at no store cost."""
    W: gl.constexpr = acc.shape[1]
    rows = gl.arange(0, acc.shape[0], layout=gl.SliceLayout(1, acc_layout))
    cols = gl.arange(0, W, layout=gl.SliceLayout(0, acc_layout))
    mask = (rows == 0)[:, None] & (cols % BN == 0)[None, :]
    offs = (row0 + rows.to(gl.int64))[:, None] * W + (n * W + cols)[None, :]
    gl.store(act_ptr + offs, acc.to(gl.bfloat16), mask=mask)


@gluon.jit
def _split_halves(acc):
    """``[BM, 2 BN]`` -> its two ``[BM, BN]`` column halves (FUSED_B: gate, linear), in registers: the wgmma layout
    puts column j and j + BN in the same thread."""
    BM: gl.constexpr = acc.shape[0]
    BN: gl.constexpr = acc.shape[1] // 2
    return gl.split(gl.permute(gl.reshape(acc, BM, 2, BN), 0, 2, 1))


@gluon.jit
def _mma_partition(
    bufs, bars, out_descs, mtiles_ptr, num_mtiles, probs_ptr, act_ptr, preact_ptr, F, H,
    BM: gl.constexpr, BN: gl.constexpr, BK: gl.constexpr, GROUP_M: gl.constexpr, EPILOGUE: gl.constexpr,
    num_warps: gl.constexpr,
):  # fmt: skip
    a_bufs, g_bufs, l_bufs, c_smem = bufs
    act_desc, preact_desc = out_descs
    ready_bars, empty_bars, hand_bars = bars
    STAGES: gl.constexpr = a_bufs.shape[0]
    # two consumer warpgroups stacked along M: each runs m64nBNk16 wgmmas on its 64 rows
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, BN, 16]
    )
    FUSED_B: gl.constexpr = g_bufs.shape[1] == 2 * BN
    wide_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[num_warps, 1], instr_shape=[16, 2 * BN, 16]
    )
    # epilogue stores: 8 consecutive bf16 (16 bytes) per thread along N
    out_layout: gl.constexpr = gl.BlockedLayout([1, 8], [32 // (BN // 8), BN // 8], [num_warps, 1], [1, 0])
    num_n = gl.cdiv(F, BN)
    num_items = num_mtiles * num_n
    step = 0
    tile = 0
    for item in range(gl.program_id(0), num_items, gl.num_programs(0)):
        mtile, n = grouped_tile(item, num_mtiles, num_n, GROUP_M)
        row0 = gl.load(mtiles_ptr + mtile * 4 + 1)
        row1 = gl.load(mtiles_ptr + mtile * 4 + 2)
        if FUSED_B:
            acc = gl.zeros((BM, 2 * BN), gl.float32, wide_layout)
            for k in range(0, H, BK):
                s = step % STAGES
                mbarrier.wait(ready_bars.index(s), (step // STAGES) & 1)
                acc = warpgroup_mma(a_bufs.index(s), g_bufs.index(s).permute((1, 0)), acc, is_async=True)
                acc = warpgroup_mma_wait(1, deps=(acc,))
                mbarrier.arrive(empty_bars.index((step + STAGES - 1) % STAGES), pred=k > 0)
                step += 1
            acc = warpgroup_mma_wait(0, deps=(acc,))
            mbarrier.arrive(empty_bars.index((step + STAGES - 1) % STAGES))
            if EPILOGUE != 4:
                acc_g, acc_l = _split_halves(acc)
        else:
            acc_g = gl.zeros((BM, BN), gl.float32, acc_layout)
            acc_l = gl.zeros((BM, BN), gl.float32, acc_layout)
            for k in range(0, H, BK):
                s = step % STAGES
                mbarrier.wait(ready_bars.index(s), (step // STAGES) & 1)
                a = a_bufs.index(s)
                acc_g = warpgroup_mma(a, g_bufs.index(s).permute((1, 0)), acc_g, is_async=True)
                acc_l = warpgroup_mma(a, l_bufs.index(s).permute((1, 0)), acc_l, is_async=True)
                # keep this stage's two wgmmas in flight; the previous stage's are done, so its buffers are free
                acc_g, acc_l = warpgroup_mma_wait(2, deps=(acc_g, acc_l))
                mbarrier.arrive(empty_bars.index((step + STAGES - 1) % STAGES), pred=k > 0)
                step += 1
            acc_g, acc_l = warpgroup_mma_wait(0, deps=(acc_g, acc_l))
            mbarrier.arrive(empty_bars.index((step + STAGES - 1) % STAGES))

        # epilogue, rounded like the unfused path: fc1 output in bf16, activation in fp32
        if EPILOGUE == 4:
            if FUSED_B:
                _epilogue_bound(acc, act_ptr, row0, n, BN, wide_layout)
            else:
                _epilogue_bound(acc_g, act_ptr, row0, n, BN, acc_layout)
                _epilogue_bound(acc_l, preact_ptr, row0, n, BN, acc_layout)
        elif EPILOGUE == 3:
            # hand the bf16 tile to the epilogue warpgroup and go on with the next tile's MMAs
            mbarrier.wait(hand_bars.index(1), (tile & 1) ^ 1)
            c_smem.index(0).store(acc_g.to(gl.bfloat16))
            c_smem.index(1).store(acc_l.to(gl.bfloat16))
            mbarrier.arrive(hand_bars.index(0))
        elif EPILOGUE == 2 and (row1 - row0 == BM) and (F % BN == 0):
            # a full tile: through shared memory and TMA stores, which drain while the next tile's MMAs run (a
            # partial tile must not: its last rows belong to the next expert's tiles)
            _epilogue_tma(acc_g, acc_l, c_smem, act_desc, preact_desc, probs_ptr, row0, n, F, BM, BN, acc_layout)
        elif EPILOGUE == 2:  # the rare partial tile, without the 32 KB conversion scratch the TMA path cannot spare
            _epilogue_masked(acc_g, acc_l, probs_ptr, act_ptr, preact_ptr, row0, row1, n, F, BM, BN, acc_layout)
        elif EPILOGUE == 1:
            if FUSED_B:  # a half of the m64n(2 BN) layout is the m64nBN one: converted in registers, stored from them
                acc_g = gl.convert_layout(acc_g, acc_layout)
                acc_l = gl.convert_layout(acc_l, acc_layout)
                _epilogue_masked(acc_g, acc_l, probs_ptr, act_ptr, preact_ptr, row0, row1, n, F, BM, BN, acc_layout)
            else:
                _epilogue_masked(acc_g, acc_l, probs_ptr, act_ptr, preact_ptr, row0, row1, n, F, BM, BN, out_layout)
        tile += 1
    if EPILOGUE == 2:
        tma.store_wait(0)


@gluon.jit
def _epilogue_partition(
    a_desc, w_desc, bufs, bars, mtiles_ptr, num_mtiles, probs_ptr, act_ptr, preact_ptr, F, H, GROUP_M: gl.constexpr
):
    """EPILOGUE 3: a warpgroup of its own takes each finished tile's ``[gate | lin]`` (bf16) from shared memory and
    writes preact and act, while the consumer warpgroups run the next tile's main loop."""
    _, _, _, hand_bufs = bufs
    _, _, hand_bars = bars
    BM: gl.constexpr = hand_bufs.shape[1]
    BN: gl.constexpr = hand_bufs.shape[2]
    CHUNK: gl.constexpr = 32  # rows per pass: 32 values of each tensor per thread
    layout: gl.constexpr = gl.BlockedLayout([1, 8], [32 // (BN // 8), BN // 8], [4, 1], [1, 0])
    num_n = gl.cdiv(F, BN)
    num_items = num_mtiles * num_n
    tile = 0
    for item in range(gl.program_id(0), num_items, gl.num_programs(0)):
        mtile, n = grouped_tile(item, num_mtiles, num_n, GROUP_M)
        row0 = gl.load(mtiles_ptr + mtile * 4 + 1)
        row1 = gl.load(mtiles_ptr + mtile * 4 + 2)
        cols = n * BN + gl.arange(0, BN, layout=gl.SliceLayout(0, layout))
        mbarrier.wait(hand_bars.index(0), tile & 1)
        for c in gl.static_range(BM // CHUNK):
            gate = hand_bufs.index(0).slice(c * CHUNK, CHUNK).load(layout)
            lin = hand_bufs.index(1).slice(c * CHUNK, CHUNK).load(layout)
            rows = row0 + c * CHUNK + gl.arange(0, CHUNK, layout=gl.SliceLayout(1, layout))
            _store_rows(gate, lin, rows, cols, row1, F, probs_ptr, act_ptr, preact_ptr)
        mbarrier.arrive(hand_bars.index(1))
        tile += 1


@gluon.jit
def ws_fc1_kernel(
    a_desc,  # TMA over the receive buffer [R_cap, H] bf16, block [BM, BK]
    w_desc,  # TMA over W1 viewed [E * 2F, H] bf16 (gate rows then linear rows per expert), block [BN, BK]
    mtiles_ptr,  # [num_mtiles, 4] int32: expert, first row, end row, tile
    num_mtiles,
    probs_ptr,  # [R] fp32
    act_ptr,  # [R, F] bf16 out
    preact_ptr,  # [R, 2F] bf16 out
    act_desc,  # TMA over act, block [BM, BN] (EPILOGUE 2)
    preact_desc,  # TMA over preact, block [BM, BN] (EPILOGUE 2)
    F,
    H,
    STAGES: gl.constexpr,
    GROUP_M: gl.constexpr,
    # 0: none (diagnostic; ptxas then drops MMAs), 1: masked stores, 2: TMA stores for full tiles, 3: an epilogue
    # warpgroup of its own (overlapped with the next tile's main loop), 4: one element per half-tile (main-loop bound)
    EPILOGUE: gl.constexpr,
    FUSED_B: gl.constexpr,  # gate and linear tiles as one [2 BN, BK] operand: one m64n(2 BN) wgmma per stage
    EPI_REGS: gl.constexpr,  # registers per thread of the EPILOGUE 3 warpgroup
    num_warps: gl.constexpr,
):
    BM: gl.constexpr = a_desc.block_type.shape[0]
    BK: gl.constexpr = a_desc.block_type.shape[1]
    BN: gl.constexpr = w_desc.block_type.shape[0]
    dtype: gl.constexpr = a_desc.dtype
    gl.static_assert(not FUSED_B or EPILOGUE == 1 or EPILOGUE == 4, "FUSED_B: epilogues 1 and 4 only")
    a_bufs = gl.allocate_shared_memory(dtype, [STAGES, BM, BK], a_desc.layout)
    if FUSED_B:  # one [2 BN, BK] tile per stage: gate rows then linear rows (same swizzle as a [BN, BK] box)
        g_bufs = gl.allocate_shared_memory(dtype, [STAGES, 2 * BN, BK], w_desc.layout)
        l_bufs = g_bufs
    else:
        g_bufs = gl.allocate_shared_memory(dtype, [STAGES, BN, BK], w_desc.layout)
        l_bufs = gl.allocate_shared_memory(dtype, [STAGES, BN, BK], w_desc.layout)
    ready_bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty_bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready_bars.index(i), count=1)
        mbarrier.init(empty_bars.index(i), count=1)
    hand_bars = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())  # EPILOGUE 3: full, free
    for i in gl.static_range(2):
        mbarrier.init(hand_bars.index(i), count=1)
    if EPILOGUE == 3:
        c_smem = gl.allocate_shared_memory(dtype, [2, BM, BN], act_desc.layout)  # the tile's gate and linear halves
    elif EPILOGUE == 2:
        c_smem = gl.allocate_shared_memory(dtype, [BM, BN], act_desc.layout)
    else:
        c_smem = a_bufs.index(0)  # unused
    fence_async_shared()
    bufs = (a_bufs, g_bufs, l_bufs, c_smem)
    bars = (ready_bars, empty_bars, hand_bars)
    # (the argument tuples are written inline: a tuple assigned to a variable first turns its constexprs into tensors;
    # worker partitions must share one signature)
    if EPILOGUE == 3:
        gl.warp_specialize(
            [
                (_mma_partition, (bufs, bars, (act_desc, preact_desc), mtiles_ptr, num_mtiles, probs_ptr, act_ptr,
                                  preact_ptr, F, H, BM, BN, BK, GROUP_M, EPILOGUE, num_warps)),
                (_load_partition, (a_desc, w_desc, bufs, bars, mtiles_ptr, num_mtiles, probs_ptr, act_ptr, preact_ptr,
                                   F, H, GROUP_M)),
                (_epilogue_partition, (a_desc, w_desc, bufs, bars, mtiles_ptr, num_mtiles, probs_ptr, act_ptr,
                                       preact_ptr, F, H, GROUP_M)),
            ],
            [1, 4],
            [24, EPI_REGS],
        )  # fmt: skip
    else:
        gl.warp_specialize(
            [
                (_mma_partition, (bufs, bars, (act_desc, preact_desc), mtiles_ptr, num_mtiles, probs_ptr, act_ptr,
                                  preact_ptr, F, H, BM, BN, BK, GROUP_M, EPILOGUE, num_warps)),
                (_load_partition, (a_desc, w_desc, bufs, bars, mtiles_ptr, num_mtiles, probs_ptr, act_ptr, preact_ptr,
                                   F, H, GROUP_M)),
            ],
            [1],
            [40],
        )  # fmt: skip


def launch(recv, w1, mtiles, num_mtiles, probs, act, preact, *, block_m=128, block_n=128, block_k=64, stages=4,
           group_m=8, epilogue=1, epi_regs=96, fused_b=False, num_sms=None, maxnreg=None):  # fmt: skip
    """Run :func:`ws_fc1_kernel` on the receive buffer ``recv [R_cap, H]`` and ``w1 [E, 2F, H]`` (bf16)."""
    import torch
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    e, two_f, h = w1.shape
    a_layout = gl.NVMMASharedLayout.get_default_for([block_m, block_k], gl.bfloat16)
    w_layout = gl.NVMMASharedLayout.get_default_for([block_n, block_k], gl.bfloat16)
    a_desc = TensorDescriptor.from_tensor(recv, [block_m, block_k], a_layout)
    w_desc = TensorDescriptor.from_tensor(w1.view(e * two_f, h), [block_n, block_k], w_layout)
    c_layout = gl.NVMMASharedLayout.get_default_for([block_m, block_n], gl.bfloat16)
    act_desc = TensorDescriptor.from_tensor(act, [block_m, block_n], c_layout)
    preact_desc = TensorDescriptor.from_tensor(preact, [block_m, block_n], c_layout)
    num_sms = num_sms or torch.cuda.get_device_properties(recv.device).multi_processor_count
    ws_fc1_kernel[(num_sms,)](
        a_desc, w_desc, mtiles, num_mtiles, probs, act, preact, act_desc, preact_desc, two_f // 2, h,
        STAGES=stages, GROUP_M=group_m, EPILOGUE=epilogue, EPI_REGS=epi_regs, FUSED_B=fused_b, num_warps=8,
        maxnreg=maxnreg or (128 if epilogue == 3 else 168),
    )  # fmt: skip


def run_case(name: str, args, variants: list[dict], launch_fn=None) -> dict:
    """One case: our Triton fc1 core (``dispatch_fc1`` with ``MODE=2``, as ``bench_gemm_core``'s ``fc1`` row),
    ``torch._grouped_mm`` and each Gluon variant (run by ``launch_fn``, default :func:`launch`, with the variant's
    keyword arguments) on the same received rows, timed in ``args.rounds`` interleaved rounds; outputs checked
    against the PyTorch path and compared with the Triton kernel's bit for bit."""
    import torch
    from bench_gemm_core import CASES, Problem, fc1_reference, rel_err, time_ms

    from comet_megatron.fused_ops import dispatch_fc1
    from comet_megatron.tuning import ShapeKey, default_config

    launch_fn = launch_fn or launch
    dev = torch.device("cuda", 0)
    props = torch.cuda.get_device_properties(dev)
    case = CASES[name]
    tokens = args.tokens or case.tokens
    prob = Problem(case, tokens, args.ep, dev, seed=0)
    key = ShapeKey(tokens, case.hidden, case.ffn, case.experts, case.topk, args.ep, props.name,
                   props.multi_processor_count)  # fmt: skip
    cfg = default_config(key)
    plans, tables = prob.plans(cfg.block_m)
    plan, f, h = plans[0], case.ffn, case.hidden
    rows = plan.recv_rows
    common = dict(ep=args.ep, gated=True, activation="silu", config=cfg,
                  grid=cfg.persistent_grid(props.multi_processor_count))  # fmt: skip
    act_t = torch.full((rows, f), float("nan"), dtype=torch.bfloat16, device=dev)
    pre_t = torch.full((rows, 2 * f), float("nan"), dtype=torch.bfloat16, device=dev)

    def triton_fc1(mode, r=0):
        out = dict(act_out=act_t, preact_out=pre_t) if r == 0 else {}
        return dispatch_fc1(
            prob.views[r], plans[r], tables[r], prob.x[r], prob.token_of_slot[r], prob.probs_of_slot[r],
            prob.w1[r], epoch=1, ep_rank=r, mode=mode, save_preact=True, **out, **common,
        )  # fmt: skip

    for r in range(args.ep):
        triton_fc1(1, r)
    triton_fc1(2)
    torch.cuda.synchronize()
    print(f"{name}: Triton core ran", flush=True)
    recv, probs, w1 = prob.views[0].recv, prob.views[0].recv_probs, prob.w1[0]
    x_e, p_e = prob.views[0].received(rows, h), probs[:rows]
    mtiles, num_mtiles = tables[0]["mtiles"], plan.mtiles.shape[0]
    offs = torch.cumsum(plan.tokens_per_expert.to(dev), 0).to(torch.int32)
    ref_pre, ref_act = fc1_reference(x_e, p_e, w1, offs)
    res = {"rows": rows, "tokens": tokens, "ep_simulated": args.ep, "block_m": cfg.block_m, "group_m": cfg.group_m,
           "triton_config": str(cfg), "flops": 4 * rows * h * f, "rel_err": {}, "ms": {}, "variants": {}}  # fmt: skip
    res["rel_err"]["triton_act"] = rel_err(act_t, ref_act)
    res["rel_err"]["triton_preact"] = rel_err(pre_t, ref_pre)
    timed = {
        "triton": lambda: triton_fc1(2),
        "grouped_mm": lambda: torch._grouped_mm(x_e, w1.transpose(1, 2), offs=offs),
    }
    for i, v in enumerate(variants):
        v = {"group_m": cfg.group_m} | v
        act_g = torch.full_like(act_t, float("nan"))
        pre_g = torch.full_like(pre_t, float("nan"))
        label = f"gluon{i}"
        try:
            print(f"{name}: {label} {v}", flush=True)
            launch_fn(recv, w1, mtiles, num_mtiles, probs, act_g, pre_g, **v)
            torch.cuda.synchronize()
        except Exception as exc:  # a variant that does not compile or fit: reported, the others still run
            res[f"{label}_error"] = f"{type(exc).__name__}: {exc}"[:400]
            continue
        res["variants"][label] = v
        res["rel_err"][f"{label}_act"] = rel_err(act_g, ref_act)
        res["rel_err"][f"{label}_preact"] = rel_err(pre_g, ref_pre)
        res["rel_err"][f"{label}_act_equal_triton"] = float((act_g == act_t).float().mean())
        res["rel_err"][f"{label}_preact_equal_triton"] = float((pre_g == pre_t).float().mean())
        timed[label] = lambda v=v, a=act_g, q=pre_g: launch_fn(recv, w1, mtiles, num_mtiles, probs, a, q, **v)
    print(f"{name}: checked {list(timed)}; timing", flush=True)
    for _ in range(args.rounds):
        for label, fn in timed.items():
            res["ms"].setdefault(label, []).append(time_ms(fn, args.iters, args.warmup))
    return res


def main(argv=None, launch_fn=None, description=None, json_name="probe_gluon_ws_fc1.json") -> None:
    import argparse
    import json
    import os
    import sys

    import torch

    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.dirname(here))
    sys.path.insert(0, os.path.dirname(os.path.dirname(here)))

    p = argparse.ArgumentParser(description=description or __doc__.split("\n\n")[0])
    p.add_argument("--cases", default="mixtral-8x7b,phi3.5-moe,qwen2-57b-a14b,dsv3-like,qwen1.5-moe-a2.7b")
    p.add_argument("--tokens", type=int, default=None, help="tokens per simulated rank (default: the case's)")
    p.add_argument("--ep", type=int, default=2)
    p.add_argument("--variants", default='[{"stages": 4}, {"stages": 3}]', help="JSON list of launch() overrides")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (each times every kernel once)")
    p.add_argument("--iters", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    variants = json.loads(args.variants)
    report = {"device": torch.cuda.get_device_name(0), "command": " ".join(sys.argv), "cases": {}}
    for name in args.cases.split(","):
        res = run_case(name, args, variants, launch_fn)
        report["cases"][name] = res
        torch.cuda.empty_cache()
        ms = {k: sum(v) / len(v) for k, v in res["ms"].items()}
        print(f"{name} rows {res['rows']}: " + ", ".join(
            f"{k} {m:.3f} ms {res['flops'] / m / 1e9:.0f} TF" for k, m in ms.items()))  # fmt: skip
        print("   errors: " + ", ".join(f"{k} {v:.2e}" for k, v in res["rel_err"].items()))
        for k, v in res.items():
            if k.endswith("_error"):
                print(f"   {k}: {v}")
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            with open(os.path.join(args.out, json_name), "w") as fh:
                json.dump(report, fh, indent=1)


if __name__ == "__main__":
    main()
