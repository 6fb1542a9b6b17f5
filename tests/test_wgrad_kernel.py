"""The accumulating weight-gradient kernel (``kernels/wgrad.py``) against fp32 products of the same bf16 inputs.

``main_grad[e] += dy_e^T @ x_e`` onto a random ``main_grad``: experts without rows (left untouched), row counts that
are not multiples of the tile's depth, gradient shapes that are not multiples of the tile, a single expert, no rows at
all, an fp32 and a bf16 ``main_grad``, the ``main_grad`` tile loaded before or after the reduction. On CPU the kernel
runs under ``TRITON_INTERPRET=1`` with small tiles (in a subprocess: the flag must be set before the kernel module is
imported); on the GPU (``COMET_TEST_DEVICE=cuda``) the compiled kernel with the default tile and larger shapes.
``python -m tests.test_wgrad_kernel`` prints the report.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch

from tests.interpreter import run_interpreted
from tests.multirank import selected_device

# (rows per expert, out, in, main_grad dtype)
CASES = [
    ([37, 0, 64, 5], 48, 40, torch.float32),
    ([0, 0, 0], 32, 32, torch.float32),
    ([100], 33, 70, torch.float32),
    ([1, 17, 0, 16, 33], 64, 16, torch.bfloat16),
]
SMALL_TILES = dict(BM=32, BN=32, BK=16, GROUP_M=2, num_warps=4, num_stages=2)
GPU_CASES = CASES + [
    ([1092] * 6, 2816, 2048, torch.float32),
    ([256, 0, 300, 255, 1, 2048], 1536, 2048, torch.float32),
    ([513, 200], 4096, 7168, torch.float32),
]


def wgrad_errors(device: str, cases, config: dict | None, seed: int = 0) -> dict:
    """Per case: the relative error of the kernel's ``main_grad`` and whether experts without rows kept theirs."""
    from comet_megatron.ops.grouped_linear import add_weight_grad_to_main_grad_by_kernel

    gen = torch.Generator().manual_seed(seed)
    report = {"checked": 0, "errors": [], "untouched_ok": []}
    for counts, out_features, in_features, grad_dtype in cases:
        rows = sum(counts)
        dy = torch.randn(rows, out_features, generator=gen).bfloat16().to(device)
        x = torch.randn(rows, in_features, generator=gen).bfloat16().to(device)
        main_grad = torch.randn(len(counts), out_features, in_features, generator=gen).to(grad_dtype).to(device)
        expected = main_grad.double()
        for e, (dy_e, x_e) in enumerate(zip(dy.split(counts), x.split(counts))):
            expected[e] += dy_e.double().t() @ x_e.double()
        before = main_grad.clone()
        add_weight_grad_to_main_grad_by_kernel(main_grad, dy, x, torch.tensor(counts, device=device), config)
        err = float((main_grad.double() - expected).norm() / expected.norm())
        empty = [e for e, c in enumerate(counts) if c == 0]
        report["checked"] += 1
        report["errors"].append(err)
        report["untouched_ok"].append(all(torch.equal(main_grad[e], before[e]) for e in empty))
    return report


def _tolerance(grad_dtype, interpreted: bool) -> float:
    """fp32: the sum of bf16 products in fp32 (~1e-7 relative). bf16: one rounding of the result, below 2^-8 of each
    element when rounded to nearest (compiled); the interpreter's fp32 -> bf16 cast truncates (below 2^-7)."""
    if grad_dtype == torch.float32:
        return 1e-5
    return 2.0**-7 if interpreted else 2.0**-8


def _check(report, cases, interpreted: bool) -> None:
    assert report["checked"] == len(cases)
    for (counts, out_features, in_features, grad_dtype), err, untouched in zip(
        cases, report["errors"], report["untouched_ok"]
    ):
        assert err < _tolerance(grad_dtype, interpreted), (counts, out_features, in_features, err)
        assert untouched, counts


def test_wgrad_kernel_interpreted():
    pytest.importorskip("triton")
    reports = run_interpreted("tests.test_wgrad_kernel", timeout=300)
    for prefetch in ("False", "True"):
        _check(reports[prefetch], CASES, interpreted=True)


@pytest.mark.gpu
def test_wgrad_kernel_compiled():
    if selected_device() != "cuda" or not torch.cuda.is_available():
        pytest.skip("needs COMET_TEST_DEVICE=cuda and a GPU")
    for prefetch in (False, True):
        _check(wgrad_errors("cuda", GPU_CASES, {"PREFETCH": prefetch}), GPU_CASES, interpreted=False)
        _check(wgrad_errors("cuda", CASES, dict(SMALL_TILES, PREFETCH=prefetch)), CASES, interpreted=False)


if __name__ == "__main__":
    print(json.dumps({str(p): wgrad_errors("cpu", CASES, dict(SMALL_TILES, PREFETCH=p)) for p in (False, True)}))
    sys.stdout.flush()
