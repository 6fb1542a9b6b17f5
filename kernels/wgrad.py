"""The experts' weight gradients summed straight into Megatron's fp32 ``main_grad``, all experts in one launch.

``main_grad[e] += dy_e^T @ x_e`` for every local expert ``e``, where ``dy_e`` / ``x_e`` are expert ``e``'s rows of the
expert-major ``dy`` ``[N, OUT]`` and ``x`` ``[N, IN]``. One program per ``BM x BN`` tile of one expert's gradient: it
reduces over the expert's rows (a run-time range starting at its first row, masked past its last, so experts need no
padding), then adds its fp32 sum to the ``main_grad`` tile in place. No bf16 gradient is written and read back, which
is what a grouped GEMM followed by Megatron's ``main_grad.add_`` costs, and there is one launch where per-expert cuBLAS
GEMMs need one each (the host's cost with tens of small experts: ``benchmarks/bench_wgrad.py``).

Tiles of distinct experts, or of one expert, never overlap: each ``main_grad`` element has one writer.
"""

import triton
import triton.language as tl

from comet_megatron.kernels.tiles import grouped_tile, mma


@triton.jit
def grouped_wgrad_accumulate_kernel(
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
    PREFETCH: tl.constexpr = False,  # load the main_grad tile before the reduction (its latency under the loop)
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
        grad = main_grad_ptr + expert.to(tl.int64) * OUT * IN + offs_m.to(tl.int64)[:, None] * IN + offs_n[None, :]
        mask = m_ok[:, None] & n_ok[None, :]
        if PREFETCH:
            acc = tl.load(grad, mask=mask, other=0.0).to(tl.float32)
        else:
            acc = tl.zeros([BM, BN], dtype=tl.float32)
        for k0 in range(start, end, BK):
            rows = k0 + tl.arange(0, BK)
            row_ok = rows < end
            rows64 = rows.to(tl.int64)
            dy = tl.load(
                dy_ptr + rows64[:, None] * stride_dy + offs_m[None, :],
                mask=row_ok[:, None] & m_ok[None, :],
                other=0.0,
            )  # [BK, BM]
            x = tl.load(
                x_ptr + rows64[:, None] * stride_x + offs_n[None, :],
                mask=row_ok[:, None] & n_ok[None, :],
                other=0.0,
            )  # [BK, BN]
            acc = mma(tl.trans(dy), x, acc, UPCAST)
        if not PREFETCH:
            acc += tl.load(grad, mask=mask, other=0.0).to(tl.float32)
        tl.store(grad, acc.to(grad.dtype.element_ty), mask=mask)
