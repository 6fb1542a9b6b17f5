"""benchmarks/bench_arrival.py: its launch plumbing under the interpreter (the peer's remote units alone, then rank
0's whole layer0) and its argument checks. The timing itself needs a GPU (``python benchmarks/bench_arrival.py``)."""

from __future__ import annotations

import pytest

from tests.interpreter import run_interpreted
from tests.scripts import load_script


@pytest.fixture(scope="module")
def arrival():
    return load_script("benchmarks/bench_arrival.py")


@pytest.fixture(scope="module")
def check_report():
    return run_interpreted("benchmarks.bench_arrival", "--check")


@pytest.mark.parametrize("order", ["own_rows_first", "expert_major"])
@pytest.mark.parametrize("layer", ["fc1", "fc2_dgrad"])
def test_emulated_dispatch_gives_the_no_wait_outputs(check_report, layer, order):
    """The peer's units split by destination keep their order and cover every unit; rank 0's dispatch kernel (layer0,
    or the backward's dispatch ⊕ fc2 data-gradient) fed only by the peer's remote units (its own pushes in the same
    launch) equals the path with every flag raised first, bit for bit, and PyTorch within the interpreter's
    truncation (tests/test_fused_interpret.py: 4e-2)."""
    report = check_report[f"{layer}/{order}"]
    assert report["units_split_partitions"] and report["units_split_keeps_order"], report
    assert report["emulated_equals_no_wait"] and report["debug_errors"] == 0, report
    assert report["rel_err_vs_torch"] < 4e-2, report


def test_arguments_are_checked_with_the_option_named(arrival, capsys):
    args = arrival.parse_args(["--skews-us", "0, 250", "--configs", '[{"own_rows_first": false}]'])
    assert args.skews == [0.0, 250.0] and args.overrides == [{"own_rows_first": False}]
    assert [o["own_rows_first"] for o in arrival.parse_args([]).overrides] == [True, False]
    for bad, option in (
        (["--skews-us", "soon"], "--skews-us"),
        (["--skews-us", "-5"], "--skews-us"),
        (["--link-gbps", "0"], "--link-gbps"),
        (["--peer-programs", "0"], "--peer-programs"),
        (["--configs", '[{"own_rows_frist": false}]'], "own_rows_frist"),
    ):
        with pytest.raises(SystemExit):
            arrival.parse_args(bad)
        assert option in capsys.readouterr().err


def test_units_to_keeps_one_destination_in_order(arrival):
    """The split the calibration uses (the peer's local units alone): one destination's units, a subsequence of the
    plan's order, the two destinations together every unit once."""
    import torch

    from comet_megatron.fused_plan import build_plan

    counts = torch.tensor([[3, 0, 17, 5], [9, 2, 0, 30]])
    for own_first in (True, False):
        plan = build_plan(counts, 1, 2, 4, 16, own_rows_first=own_first)
        rows = {tuple(u) for u in plan.units.tolist()}
        parts = [arrival.units_to(plan, dest) for dest in (0, 1)]
        for dest, part in enumerate(parts):
            assert part.units.shape[0] > 0 and set(part.units[:, 0].tolist()) == {dest}
            position = [plan.units.tolist().index(u) for u in part.units.tolist()]
            assert position == sorted(position)  # the plan's order kept
            assert part.mtiles is plan.mtiles
        assert sorted(map(tuple, torch.cat([p.units for p in parts]).tolist())) == sorted(rows)
        assert len(rows) == plan.units.shape[0]
