"""The fused kernels' work lists (host plan): every row pushed once to where the offsets say, every received
row computed once, local tiles first; and the packed device tables equal the plan's."""

from __future__ import annotations

import pytest
import torch

from comet_megatron.fused_plan import build_plan
from comet_megatron.routing import expert_major_offsets


def _random_counts(seed: int, ep: int, e_local: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 300, (ep, ep * e_local), generator=g)
    if seed % 3 == 0:
        counts[:, :e_local] = 0  # rank 0's experts get nothing
    if seed % 4 == 0:
        counts[-1] = 0  # the last rank sends nothing
    return counts


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("ep,e_local,block_m", [(1, 3, 16), (2, 4, 128), (4, 2, 64), (3, 1, 16)])
@pytest.mark.parametrize("own_rows_first", [True, False])
def test_units_push_every_slot_once_to_its_offset(seed, ep, e_local, block_m, own_rows_first):
    """Every slot pushed once, inside one M-tile of its destination expert, in the order the destinations compute:
    own rank first, each destination expert-major; or (``own_rows_first`` off) expert-major across destinations."""
    counts = _random_counts(seed, ep, e_local)
    starts = expert_major_offsets(counts, e_local, rotate=True)  # [dest, src, e]
    for me in range(ep):
        plan = build_plan(counts, me, e_local, block_m, 10**6, own_rows_first=own_rows_first)
        slots = int(counts[me].sum())
        covered = torch.zeros(slots, dtype=torch.int64)
        for dest, expert, tile, dest_row, first_slot, rows in plan.units.tolist():
            assert 0 < rows <= block_m
            covered[first_slot : first_slot + rows] += 1
            # the unit's rows lie inside one M-tile of the destination expert and inside my segment there
            seg_start = int(starts[dest, me, expert])
            expert_start = int(starts[dest, :, expert].min()) if counts[:, dest * e_local + expert].any() else 0
            assert seg_start <= dest_row and dest_row + rows <= seg_start + int(counts[me, dest * e_local + expert])
            assert (dest_row - expert_start) // block_m == tile == (dest_row + rows - 1 - expert_start) // block_m
        assert bool((covered == 1).all()), f"rank {me}: slots pushed {covered.tolist()}"
        order = [((d - me) % ep, e, t) for d, e, t in plan.units[:, :3].tolist()]  # (rotated dest, expert, tile)
        if not own_rows_first:
            order = [(e, r, t) for r, e, t in order]
        assert order == sorted(order) and len(set(order)) == len(order)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("ep,e_local,block_m", [(1, 3, 16), (2, 4, 128), (4, 2, 64)])
@pytest.mark.parametrize("own_rows_first", [True, False])
def test_mtiles_cover_received_rows_once_in_order(seed, ep, e_local, block_m, own_rows_first):
    """Every received row in exactly one M-tile; the tiles of own rows first (``own_rows_first``, the default), or
    all expert-major."""
    counts = _random_counts(seed, ep, e_local)
    for me in range(ep):
        plan = build_plan(counts, me, e_local, block_m, 10**6, own_rows_first=own_rows_first)
        covered = torch.zeros(plan.recv_rows, dtype=torch.int64)
        local_rows = counts[me, me * e_local : (me + 1) * e_local]
        expert_start = torch.cumsum(plan.tokens_per_expert, 0) - plan.tokens_per_expert
        seen_remote = False
        for expert, row0, row1, tile in plan.mtiles.tolist():
            assert 0 < row1 - row0 <= block_m and row0 == int(expert_start[expert]) + tile * block_m
            covered[row0:row1] += 1
            remote = row1 - int(expert_start[expert]) > int(local_rows[expert])
            if own_rows_first:
                assert not (seen_remote and not remote), "a tile of local rows after one that needs remote rows"
            seen_remote |= remote
        if not own_rows_first:
            assert plan.mtiles[:, [0, 3]].tolist() == sorted(plan.mtiles[:, [0, 3]].tolist())
        assert bool((covered == 1).all())
        assert plan.recv_rows == int(counts[:, me * e_local : (me + 1) * e_local].sum())
        assert plan.recv_splits == [int(counts[s, me * e_local : (me + 1) * e_local].sum()) for s in range(ep)]
        assert plan.send_splits == [int(counts[me, d * e_local : (d + 1) * e_local].sum()) for d in range(ep)]


def test_device_tables_are_the_plan_in_one_buffer():
    plan = build_plan(_random_counts(5, 2, 4), 1, 4, 64, 10**6)
    tables = plan.device_tables(torch.device("cpu"))
    assert set(tables) == {"units", "mtiles", "src_table", "src_first_slot", "tokens_per_expert", "sizes"}
    storage = {t.untyped_storage().data_ptr() for t in tables.values()}
    assert len(storage) == 1  # one host-to-device copy
    for name, t in tables.items():
        assert t.dtype == torch.int32 and t.data_ptr() % 16 == 0, name
    assert tables.pop("sizes").tolist() == [plan.units.shape[0], plan.mtiles.shape[0], 1]
    for name, t in tables.items():
        assert torch.equal(t.long(), getattr(plan, name).long()), name


def test_a_too_tall_expert_names_the_option():
    counts = torch.tensor([[1000, 0], [0, 0]])
    with pytest.raises(ValueError, match="block_m"):
        build_plan(counts, 0, 1, 16, 8)
