"""Cross-GPU signalling primitives shared by the fused kernels.

A flag holds the *epoch* (call number) of the last writer, so flags are never reset between calls.
The writer publishes data with a CTA barrier followed by a system-scope release; the reader spins with
system-scope acquire loads. In debug mode (``DEBUG``) a spin gives up after ``MAX_SPINS`` polls and
records the failure in ``error_ptr`` instead of hanging forever.
"""

import triton
import triton.language as tl

PEER_BASE_ALIGNMENT = 16  # bytes: peer_pointer's promise; fused_ops.peer_table checks every table's addresses


@triton.jit
def peer_pointer(table_ptr, rank, dtype: tl.constexpr, ALIGNED: tl.constexpr = False):
    """Base pointer of ``rank``'s copy of a symmetric buffer (table: int64 [ws] of addresses), or one per element of
    ``rank`` when it is a tensor of ranks.

    ``ALIGNED`` marks it 16-byte aligned: an address loaded from memory is otherwise assumed unaligned, and every
    store through it becomes a 2-byte access (8x the instructions of a 16-byte one for bf16 rows). Offsets added to
    it keep whatever alignment Triton can prove of them, so a row stride that is not a multiple of 8 elements still
    gets narrower accesses."""
    ptr = tl.load(table_ptr + rank).to(tl.pointer_type(dtype))
    if ALIGNED:
        ptr = tl.multiple_of(ptr, 16)
    return ptr


@triton.jit
def publish(flag_ptr, epoch):
    """Make this program's prior stores visible, then set ``*flag_ptr = epoch`` (any GPU may read it)."""
    tl.debug_barrier()
    tl.atomic_xchg(flag_ptr, epoch, sem="release", scope="sys")


@triton.jit
def wait_for(flag_ptr, epoch, error_ptr, DEBUG: tl.constexpr, MAX_SPINS: tl.constexpr):
    """Spin until ``*flag_ptr == epoch`` (acquire)."""
    if DEBUG:
        spins = 0
        seen = tl.atomic_add(flag_ptr, 0, sem="acquire", scope="sys")
        while (seen != epoch) & (spins < MAX_SPINS):
            seen = tl.atomic_add(flag_ptr, 0, sem="acquire", scope="sys")
            spins += 1
        if seen != epoch:
            tl.atomic_xchg(error_ptr, 1)
    else:
        seen = tl.atomic_add(flag_ptr, 0, sem="acquire", scope="sys")
        while seen != epoch:
            seen = tl.atomic_add(flag_ptr, 0, sem="acquire", scope="sys")


@triton.jit
def async_proxy_fence():
    """Order this thread's generic-proxy view (the flag it just acquired) before later TMA (async-proxy)
    reads of global memory that other GPUs wrote with ordinary stores."""
    tl.inline_asm_elementwise(
        "fence.proxy.async.global; mov.u32 $0, 0;", "=r", [], dtype=tl.int32, is_pure=False, pack=1
    )


@triton.jit
def release_queues(queues_ptr):
    """End of a grid that takes work from ``queues_ptr`` (``int32 [3]``: push units, GEMM tiles, programs done):
    the last program to finish zeroes all three, so the next launch finds them ready without a host-side fill
    (one operator less between the counts read and the first fused kernel)."""
    tl.debug_barrier()
    finished = tl.atomic_add(queues_ptr + 2, 1)
    if finished == tl.num_programs(0) - 1:
        tl.atomic_xchg(queues_ptr, 0)
        tl.atomic_xchg(queues_ptr + 1, 0)
        tl.atomic_xchg(queues_ptr + 2, 0)
