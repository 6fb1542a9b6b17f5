"""Fused backend == reference backend on GPUs (bf16, tolerance relative to PyTorch's own bf16 error).

Run on the GPU machine: ``COMET_TEST_DEVICE=cuda pytest tests/test_fused_gpu.py`` (NCCL; EP=2 needs 2 GPUs, EP=1
runs on one: plain device memory instead of symmetric memory).
"""

from __future__ import annotations

import functools

import pytest
import torch

from tests.multirank import run_ranks, selected_device

pytestmark = pytest.mark.gpu

ABS_FLOOR = 1e-3


def _skip_without_gpus(ws: int):
    if selected_device() != "cuda" or torch.cuda.device_count() < ws:
        pytest.skip(f"needs COMET_TEST_DEVICE=cuda and {ws} GPUs")


@functools.cache
def _run(ws: int, fused_backward: bool):
    from tests.fused_gpu_cases import GPU_CASES, run_fused_cases

    try:
        return run_ranks(ws, run_fused_cases, list(GPU_CASES), 2, fused_backward), None
    except RuntimeError as exc:
        return None, str(exc)


def _case_names():
    from tests.fused_gpu_cases import GPU_CASES

    return list(GPU_CASES)


@pytest.mark.parametrize("fused_backward", [False, True], ids=["torch_backward", "fused_backward"])
@pytest.mark.parametrize("case", _case_names())
@pytest.mark.parametrize("ws", [2, 1], ids=["ep2", "ep1"])
def test_fused_matches_reference(case, fused_backward, ws):
    _skip_without_gpus(ws)
    from tests.fused_gpu_cases import SLACK

    results, error = _run(ws, fused_backward)
    if error:
        pytest.fail(error, pytrace=False)
    for rank, per_case in enumerate(results):
        assert "error" not in per_case[case], per_case[case]["error"]
        for call, m in enumerate(per_case[case]):
            assert m["finite"], (rank, call)
            for quantity in ("output", "input_grad", "fc1_grad", "fc2_grad", "router_grad"):
                fused, bf16 = m[f"{quantity}_fused"], m[f"{quantity}_bf16_ref"]
                assert fused <= SLACK * bf16 + ABS_FLOOR, (rank, call, quantity, fused, bf16)


def test_device_plan_kernel_compiled_equals_the_host_specification():
    """The plan kernel compiled for the GPU builds build_plan's tables entry for entry (the interpreter tests its
    logic on the CPU; this tests what the compiler made of it), capacity overflow included."""
    _skip_without_gpus(1)
    from tests.fused_simulation import plan_equivalence

    report = plan_equivalence(cases=120, device="cuda")
    assert report["checked"] >= 200 and report["failures"] == [], report
    assert report["overflow_detected"] and report["rebuilt_matches"] == [], report
    assert report["units_overflow_detected"] and report["units_rebuilt_matches"] == [], report


@pytest.mark.parametrize("ws", [2, 1], ids=["ep2", "ep1"])
def test_deferred_weight_gradients_sum_the_same_bits(ws):
    """Three fused layers in a chain, two micro-batches: deferring the expert weight gradients by 1 or 3 layers
    (COMET_WGRAD_DEFER), or by 1 carried into the next forward (COMET_WGRAD_CARRY), leaves the same fp32 main_grad
    bits as computing them in place, per accumulation method."""
    _skip_without_gpus(ws)
    from tests.fused_gpu_cases import run_deferred_chain

    reports = run_ranks(ws, run_deferred_chain, timeout=400)
    for rank, report in enumerate(reports):
        assert all(report["same_bits"].values()), (rank, report)
        for variant, queued in report["queued_after_backward"].items():  # carried: one layer left for the forward
            assert queued == ([1, 1] if variant.endswith("c") else [0, 0]), (rank, variant, report)
        assert all(norm > 0 for norm in report["main_grad_norm"].values()), (rank, report)
    if ws > 1:  # the routing differs per rank: in some layer a rank is behind and its forward runs carried jobs
        assert sum(report["flops_run_in_forward"] for report in reports) > 0, reports
