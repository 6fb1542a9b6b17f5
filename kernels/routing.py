"""The token owner's slots from the router's ``[T, E]`` map, in two launches.

The same slots as the sort in :func:`comet_megatron.routing.build_local_routing` (its specification, tested entry
for entry): expert-major, tokens ascending inside each expert — a counting sort over the map instead of a radix sort
of ``T * E`` keys. Before the counts read every host operation paces the GPU (each small launch runs as soon as it
is queued); the sort path costs ~15 of them.

The map is cut into blocks of ``BT`` rows, one program each (a single program scanning the whole map is latency-bound:
2 ms for DeepSeek-V3's 4096 x 256 on an H200). :func:`routing_block_counts_kernel` counts each block's entries per
expert; :func:`routing_slots_kernel` sums the blocks before its own (the rank of its first row in every expert column)
and all of them (each expert's first slot, the exclusive prefix of the totals), then ranks its block's entries down
each expert column and across each token's row: the slot, and its place among the token's slots.
"""

import triton
import triton.language as tl


@triton.jit
def _block(map_ptr, block, T, E, BT: tl.constexpr, E_P2: tl.constexpr):
    """Rows, columns and the 0/1 entries (int32) of block ``block`` of the map (padding: 0)."""
    rows = block * BT + tl.arange(0, BT)
    cols = tl.arange(0, E_P2)
    mask = (rows < T)[:, None] & (cols < E)[None, :]
    raw = tl.load(map_ptr + rows[:, None].to(tl.int64) * E + cols[None, :], mask=mask, other=0)
    return rows, cols, (raw != 0).to(tl.int32)


@triton.jit
def routing_block_counts_kernel(
    map_ptr,  # uint8 [T, E]: the routing map's bytes (torch bool), row-major
    block_counts_ptr,  # int32 [NB, E]: routed entries per expert in each block of BT rows
    T,
    E,
    BT: tl.constexpr,
    E_P2: tl.constexpr,
):
    block = tl.program_id(0)
    _, cols, routed = _block(map_ptr, block, T, E, BT, E_P2)
    tl.store(block_counts_ptr + block * E + cols, tl.sum(routed, axis=0), mask=cols < E)


@triton.jit
def routing_slots_kernel(
    map_ptr,  # uint8 [T, E]
    block_counts_ptr,  # int32 [NB, E] from routing_block_counts_kernel
    token_of_slot_ptr,  # int64 [T * K]
    expert_of_slot_ptr,  # int64 [T * K]
    flat_index_ptr,  # int64 [T * K]: t * E + e, the slot's entry in the row-major [T, E] probabilities
    slot_of_token_ptr,  # int64 [T, K]: each token's slots, ascending (its experts ascending)
    tokens_per_expert_ptr,  # int64 [E]
    T,
    E,
    K,
    NB,
    BT: tl.constexpr,
    E_P2: tl.constexpr,
    CB: tl.constexpr,  # blocks' counts summed per step
):
    block = tl.program_id(0)
    cols = tl.arange(0, E_P2)
    col_ok = cols < E
    total = tl.zeros([E_P2], dtype=tl.int32)
    before = tl.zeros([E_P2], dtype=tl.int32)  # entries of each expert in the blocks above this one
    for c0 in range(0, NB, CB):
        blocks = c0 + tl.arange(0, CB)
        counts = tl.load(
            block_counts_ptr + blocks[:, None] * E + cols[None, :],
            mask=(blocks < NB)[:, None] & col_ok[None, :],
            other=0,
        )
        total += tl.sum(counts, axis=0)
        before += tl.sum(tl.where((blocks < block)[:, None], counts, 0), axis=0)
    if block == 0:
        tl.store(tokens_per_expert_ptr + cols, total.to(tl.int64), mask=col_ok)
    expert_start = tl.cumsum(total, axis=0) - total
    rows, cols, routed = _block(map_ptr, block, T, E, BT, E_P2)
    slot = expert_start[None, :] + before[None, :] + tl.cumsum(routed, axis=0) - routed
    place = tl.cumsum(routed, axis=1) - routed  # among the token's slots
    # a map with more than K entries in a row (not dropless top-K) must not write out of bounds
    write = (routed != 0) & (slot < T * K)
    token = (rows[:, None] + 0 * cols[None, :]).to(tl.int64)
    expert = (cols[None, :] + 0 * rows[:, None]).to(tl.int64)
    slot64 = slot.to(tl.int64)
    tl.store(token_of_slot_ptr + slot64, token, mask=write)
    tl.store(expert_of_slot_ptr + slot64, expert, mask=write)
    tl.store(flat_index_ptr + slot64, token * E + expert, mask=write)
    tl.store(slot_of_token_ptr + token * K + place, slot64, mask=write & (place < K))
