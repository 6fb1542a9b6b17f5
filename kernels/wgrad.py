"""The experts' weight gradients summed straight into Megatron's fp32 ``main_grad``, all experts in one launch.

``main_grad[e] += dy_e^T @ x_e`` for every local expert ``e``, where ``dy_e`` / ``x_e`` are expert ``e``'s rows of the
expert-major ``dy`` ``[N, OUT]`` and ``x`` ``[N, IN]``. One program per ``BM x BN`` tile of one expert's gradient: it
reduces over the expert's rows (a run-time range starting at its first row and masked past its last, so experts need
no padding), then adds its fp32 sum to the ``main_grad`` tile in place. No bf16 gradient is written and read back,
which is what a grouped GEMM followed by Megatron's ``main_grad.add_`` costs, and there is one launch where per-expert
cuBLAS GEMMs need one each (the host's cost with tens of small experts: ``benchmarks/bench_wgrad.py``).

``USE_TMA`` loads the row chunks that lie wholly inside the expert with tensor-memory-accelerator descriptors (the
GEMM loop Triton pipelines best on Hopper); only the last, partial chunk needs a row mask, and a TMA tile cannot be
masked by a run-time row bound short of the tensor's end (the rows after it are the next expert's), so that one chunk
is read with masked pointer loads.

``REDUCE_BY_TMA`` hands the finished fp32 tile to the TMA unit as a bulk reduce-add into ``main_grad``
(``cp.reduce.async.bulk.tensor .add``): the read-modify-write happens in the memory system, and the program waits
only until the tile has left shared memory (``cp.async.bulk.wait_group.read 0``) before the SM takes its next program,
where a load, add and store in the program would hold the SM for the tile's whole round trip to HBM (the pointer
epilogue's time adds to the GEMM's; ``benchmarks/results/s10``). That wait is still ~20% of the warps' stall samples
where experts have few rows (DSv3-like, ``benchmarks/results/s26/ncu/``). The descriptor spans ``[E, OUT, IN]``, so
tiles past an expert's edge are clipped by the hardware.

``PREFETCH_GRAD`` asks the L2 for the tile's ``main_grad`` lines when the program starts (``1``: plain, ``2``: with
the ``evict_last`` priority), so the read half of the read-modify-write is in flight under the tile's GEMM and the
reduce at the end finds its lines in L2 instead of waiting on HBM. A prefetch changes no value.

Tiles of distinct experts, or of one expert, never overlap: each ``main_grad`` element has one writer.
"""

import triton
import triton.language as tl

from comet_megatron.kernels.tiles import grouped_tile, mma


@triton.jit
def _rows_tile(ptr, rows, row_end, stride, cols, cols_ok):
    """``[len(rows), len(cols)]`` tile of a row-major matrix; rows from ``row_end`` on, and masked columns, read 0."""
    return tl.load(
        ptr + rows.to(tl.int64)[:, None] * stride + cols[None, :],
        mask=(rows < row_end)[:, None] & cols_ok[None, :],
        other=0.0,
    )


@triton.jit
def _prefetch_l2(ptrs, EVICT_LAST: tl.constexpr):
    """One L2 prefetch per element of ``ptrs`` (a pointer tensor); nothing is read into registers."""
    if EVICT_LAST:
        tl.inline_asm_elementwise(
            "prefetch.global.L2::evict_last [$1]; mov.u32 $0, 0;", "=r,l", [ptrs], dtype=tl.int32, is_pure=False, pack=1
        )
    else:
        tl.inline_asm_elementwise(
            "prefetch.global.L2 [$1]; mov.u32 $0, 0;", "=r,l", [ptrs], dtype=tl.int32, is_pure=False, pack=1
        )


@triton.jit
def grouped_wgrad_accumulate_kernel(
    dy_desc,  # USE_TMA: TMA descriptor of dy, block [BK, BM]; otherwise ignored
    x_desc,  # USE_TMA: TMA descriptor of x, block [BK, BN]; otherwise ignored
    main_grad_desc,  # REDUCE_BY_TMA: TMA descriptor of main_grad [E, OUT, IN] fp32, block [1, BM, BN]; else ignored
    dy_ptr,  # bf16 [N, OUT]: output-gradient rows, expert-major (row stride stride_dy, unit column stride)
    x_ptr,  # bf16 [N, IN]: input rows, same order (row stride stride_x)
    row_start_ptr,  # int64 [E + 1]: expert e's rows are [row_start[e], row_start[e + 1])
    main_grad_ptr,  # fp32 (or the inputs' dtype) [E, OUT, IN], contiguous, updated in place
    OUT,
    IN,
    stride_dy,
    stride_x,
    BM: tl.constexpr,
    BN: tl.constexpr,
    BK: tl.constexpr,
    GROUP_M: tl.constexpr,
    UPCAST: tl.constexpr,  # fp32 products: the interpreter's bf16 dot is wrong (kernels/tiles.py)
    USE_TMA: tl.constexpr = False,
    REDUCE_BY_TMA: tl.constexpr = False,
    PREFETCH_GRAD: tl.constexpr = 0,  # 0: none; 1: the main_grad tile's lines into L2 first; 2: the same, evict_last
):
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(OUT, BM)
    tiles_n = tl.cdiv(IN, BN)
    tiles_per_expert = tiles_m * tiles_n
    expert = pid // tiles_per_expert
    tile_m, tile_n = grouped_tile(pid % tiles_per_expert, tiles_m, tiles_n, GROUP_M)

    start = tl.load(row_start_ptr + expert)
    end = tl.load(row_start_ptr + expert + 1)
    if end > start:
        offs_m = tile_m * BM + tl.arange(0, BM)
        offs_n = tile_n * BN + tl.arange(0, BN)
        m_ok = offs_m < OUT
        n_ok = offs_n < IN
        if PREFETCH_GRAD:
            # One address per 32 columns of the tile's rows (a 128-byte line of an fp32 main_grad, half a line of a
            # bf16 one); addresses past the matrix's edge go to its first element.
            line_cols = tile_n * BN + tl.arange(0, BN // 32) * 32
            line_ok = m_ok[:, None] & (line_cols < IN)[None, :]
            line_offs = expert.to(tl.int64) * OUT * IN + offs_m.to(tl.int64)[:, None] * IN + line_cols[None, :]
            _prefetch_l2(main_grad_ptr + tl.where(line_ok, line_offs, 0), PREFETCH_GRAD == 2)
        acc = tl.zeros([BM, BN], dtype=tl.float32)
        masked_from = start
        if USE_TMA:
            masked_from = end - (end - start) % BK
            for k0 in range(start.to(tl.int32), masked_from.to(tl.int32), BK):
                dy = dy_desc.load([k0, tile_m * BM])  # [BK, BM]; columns past OUT read 0
                x = x_desc.load([k0, tile_n * BN])  # [BK, BN]
                acc = mma(tl.trans(dy), x, acc, UPCAST)
        for k0 in range(masked_from, end, BK):
            rows = k0 + tl.arange(0, BK)
            dy = _rows_tile(dy_ptr, rows, end, stride_dy, offs_m, m_ok)  # [BK, BM]
            x = _rows_tile(x_ptr, rows, end, stride_x, offs_n, n_ok)  # [BK, BN]
            acc = mma(tl.trans(dy), x, acc, UPCAST)
        if REDUCE_BY_TMA:
            main_grad_desc.atomic_add([expert, tile_m * BM, tile_n * BN], tl.reshape(acc, [1, BM, BN]))
        else:
            grad = main_grad_ptr + expert.to(tl.int64) * OUT * IN + offs_m.to(tl.int64)[:, None] * IN + offs_n[None, :]
            mask = m_ok[:, None] & n_ok[None, :]
            acc += tl.load(grad, mask=mask, other=0.0).to(tl.float32)
            tl.store(grad, acc.to(grad.dtype.element_ty), mask=mask)
