"""Tile helpers shared by the fused GEMMs."""

import triton
import triton.language as tl


@triton.jit
def mma(a, b, acc, UPCAST: tl.constexpr):
    """``acc += a @ b``. ``UPCAST`` multiplies in fp32: Triton 3.6's interpreter (CPU tests) computes
    bf16 x bf16 dots wrongly, so interpreted runs upcast; compiled kernels keep bf16 tensor-core math."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc)
    else:
        return tl.dot(a, b, acc)


@triton.jit
def grouped_tile(item, num_mtiles, num_n, GROUP_M: tl.constexpr):
    """(M-tile, N-tile) of work item ``item``: ``GROUP_M`` consecutive M-tiles sweep the N-tiles together,
    so each weight tile is read from HBM once per group and then served from L2."""
    per_group = GROUP_M * num_n
    first_m = (item // per_group) * GROUP_M
    group_rows = tl.minimum(num_mtiles - first_m, GROUP_M)
    within = item % per_group
    return first_m + within % group_rows, within // group_rows


@triton.jit
def column_halves(tile, BM: tl.constexpr, BN: tl.constexpr):
    """Columns ``[0, BN/2)`` and ``[BN/2, BN)`` of a ``[BM, BN]`` tile, for epilogues that work a half at a time."""
    return tl.split(tl.permute(tl.reshape(tile, (BM, 2, BN // 2)), (0, 2, 1)))
