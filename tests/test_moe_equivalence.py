"""CometMoELayer (reference backend) equals Megatron's own MoELayer (alltoall + SequentialMLP).

fp32, same weights and inputs, 1/2/4 expert-parallel ranks (and TP=2 + sequence parallel beside EP=2):
output, input gradient, every local expert's weight gradients, the router weight gradient (aux loss included)
and shared-expert gradients agree to 1e-6 relative; tokens per expert are compared exactly.

On the GPU machine: ``COMET_TEST_DEVICE=cuda pytest tests/test_moe_equivalence.py`` (NCCL, one GPU
per rank; world sizes larger than the GPU count are skipped).
"""

from __future__ import annotations

import functools

import pytest
import torch

from tests.moe_cases import CASES, run_cases
from tests.multirank import run_ranks, selected_device

WORLD_SIZES = (1, 2, 4)
# (ranks, attention tensor-parallel size): expert parallelism over all ranks, and TP=2 with sequence parallelism
# beside EP=2 on 4 ranks, the layout of Megatron's Mixtral recipes (each rank routes its own sequence shard)
LAYOUTS = [(ws, 1) for ws in WORLD_SIZES] + [(4, 2)]
LAYOUT_IDS = [f"ws{ws}-tp{tp}" for ws, tp in LAYOUTS]
TOL = 1e-6


@functools.cache
def _run(ws: int, tp: int = 1):
    try:
        return run_ranks(ws, run_cases, list(CASES), None, tp), None
    except RuntimeError as exc:  # cached too: one failing spawn must not be repeated by every test
        return None, str(exc)


def _results(ws: int, tp: int = 1):
    results, error = _run(ws, tp)
    if error is not None:
        pytest.fail(error, pytrace=False)
    return results


def _skip_unrunnable(ws: int):
    if selected_device() == "cuda" and ws > torch.cuda.device_count():
        pytest.skip(f"needs {ws} GPUs")


@pytest.mark.parametrize("ws, tp", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("case", [c for c in CASES if c != "negative_control"])
def test_matches_megatron(ws, tp, case):
    _skip_unrunnable(ws)
    for rank, per_case in enumerate(_results(ws, tp)):
        m = per_case[case]
        assert m["parallel"] == (tp, ws // tp, tp > 1)  # (TP, EP, sequence parallel) really in use
        assert m["layer_types"] == ("CometMoELayer", "CometTokenDispatcher", "CometGroupedMLP")
        assert m["tokens_per_expert_equal"], (rank, m["tokens_per_expert"])
        assert m["output_finite"]
        errors = {k: v for k, v in m.items() if isinstance(v, float)}
        assert any(k.startswith("fc1_grad") for k in errors) and "router_grad" in errors
        bad = {k: v for k, v in errors.items() if not v <= TOL}
        assert not bad, f"rank {rank}: {bad}"


@pytest.mark.parametrize("ws", WORLD_SIZES)
def test_routing_pressure_took_effect(ws):
    """The forced-routing cases really produced the situations they are named after."""
    _skip_unrunnable(ws)
    results = _results(ws)
    e_local = CASES["expert_gets_zero_tokens"].experts // ws
    starved = CASES["expert_gets_zero_tokens"].starve_expert
    assert results[starved // e_local]["expert_gets_zero_tokens"]["tokens_per_expert"][starved % e_local] == 0
    hot = CASES["all_tokens_one_expert"].all_to_expert
    total = CASES["all_tokens_one_expert"].tokens * ws
    for rank, per_case in enumerate(results):
        counts = per_case["all_tokens_one_expert"]["tokens_per_expert"]
        assert sum(counts) == (total if rank == hot // e_local else 0)
    sends = results[0]["rank_sends_zero_tokens"]["send_splits"]
    assert sends[0] == CASES["rank_sends_zero_tokens"].tokens * CASES["rank_sends_zero_tokens"].topk
    assert all(s == 0 for s in sends[1:])


@pytest.mark.parametrize("ws, tp", LAYOUTS, ids=LAYOUT_IDS)
def test_negative_control_is_detected(ws, tp):
    """A 1% change of one expert's weight on every rank must show up in the comparison."""
    _skip_unrunnable(ws)
    for per_case in _results(ws, tp):
        m = per_case["negative_control"]
        if m["tokens_per_expert"][0] > 0:
            assert m["output"] > 1e-4 or m["fc1_grad_0"] > 1e-4
