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
