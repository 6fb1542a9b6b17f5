"""The token owner's slots from the router's ``[T, E]`` map, in one launch.

The same slots as the sort in :func:`comet_megatron.routing.build_local_routing` (its specification, tested entry
for entry): expert-major, tokens ascending inside each expert — a counting sort over the map instead of a radix sort
of ``T * E`` keys. Before the counts read every host operation paces the GPU (each small launch runs as soon as it
is queued); the sort path costs ~15 of them.

One program scans the map twice in ``[BT, E]`` blocks: first the tokens per expert (whose exclusive prefix is each
expert's first slot), then each routed entry's rank inside its expert column (a running count plus a prefix down the
block) and inside its token's row (a prefix across the block) — its slot, and its place among the token's slots.
"""

import triton
import triton.language as tl


@triton.jit
def local_routing_kernel(
    map_ptr,  # uint8 [T, E]: the routing map's bytes (torch bool), row-major
    token_of_slot_ptr,  # int64 [T * K]
    expert_of_slot_ptr,  # int64 [T * K]
    flat_index_ptr,  # int64 [T * K]: t * E + e, the slot's entry in the row-major [T, E] probabilities
    slot_of_token_ptr,  # int64 [T, K]: each token's slots, ascending (its experts ascending)
    tokens_per_expert_ptr,  # int64 [E]
    T,
    E,
    K,
    BT: tl.constexpr,
    E_P2: tl.constexpr,
):
    cols = tl.arange(0, E_P2)
    col_ok = cols < E
    counts = tl.zeros([E_P2], dtype=tl.int32)
    for t0 in range(0, T, BT):
        rows = t0 + tl.arange(0, BT)
        mask = (rows < T)[:, None] & col_ok[None, :]
        raw = tl.load(map_ptr + rows[:, None].to(tl.int64) * E + cols[None, :], mask=mask, other=0)
        counts += tl.sum((raw != 0).to(tl.int32), axis=0)
    tl.store(tokens_per_expert_ptr + cols, counts.to(tl.int64), mask=col_ok)
    expert_start = tl.cumsum(counts, axis=0) - counts
    num_slots = T * K
    seen = tl.zeros([E_P2], dtype=tl.int32)  # routed entries of each expert in the rows already scanned
    for t0 in range(0, T, BT):
        rows = t0 + tl.arange(0, BT)
        mask = (rows < T)[:, None] & col_ok[None, :]
        raw = tl.load(map_ptr + rows[:, None].to(tl.int64) * E + cols[None, :], mask=mask, other=0)
        routed = (raw != 0).to(tl.int32)
        slot = expert_start[None, :] + seen[None, :] + tl.cumsum(routed, axis=0) - routed
        place = tl.cumsum(routed, axis=1) - routed  # among the token's slots
        # a map with more than K entries in a row (not dropless top-K) must not write out of bounds
        write = (routed != 0) & (slot < num_slots)
        token = (rows[:, None] + 0 * cols[None, :]).to(tl.int64)
        expert = (cols[None, :] + 0 * rows[:, None]).to(tl.int64)
        slot64 = slot.to(tl.int64)
        tl.store(token_of_slot_ptr + slot64, token, mask=write)
        tl.store(expert_of_slot_ptr + slot64, expert, mask=write)
        tl.store(flat_index_ptr + slot64, token * E + expert, mask=write)
        tl.store(slot_of_token_ptr + token * K + place, slot64, mask=write & (place < K))
        seen += tl.sum(routed, axis=0)
