"""The accumulating weight-gradient kernel (``kernels/wgrad.py``) against fp32 products of the same bf16 inputs.

``main_grad[e] += dy_e^T @ x_e`` onto a random ``main_grad``: experts without rows (left untouched), row counts that
are not multiples of the tile's depth, gradient shapes that are not multiples of the tile, a single expert, no rows at
all, an fp32 and a bf16 ``main_grad``, row chunks read by TMA descriptors (with the expert's last, partial chunk read
by masked loads) or all by masked pointer loads, the fp32 tile added by a TMA bulk reduce (GPU only: the interpreter
has none) or in the program. On CPU the kernel runs under ``TRITON_INTERPRET=1`` with small tiles (in a subprocess: the
flag must be set before the kernel module is imported); on the GPU (``COMET_TEST_DEVICE=cuda``) the compiled kernel
with the default tile and larger shapes.
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
    ([0] * 79 + [64], 4096, 7168, torch.float32),  # the last expert's tiles start past 2^31 elements of main_grad
]


def wgrad_errors(device: str, cases, config: dict | None, seed: int = 0) -> dict:
    """Per case: the relative error of the kernel's ``main_grad`` and whether experts without rows kept theirs.
    The fp64 truth is built one expert at a time (the int64-offset case's ``main_grad`` is 9.4 GB in fp32)."""
    from comet_megatron.ops.grouped_linear import add_weight_grad_to_main_grad_by_kernel

    gen = torch.Generator().manual_seed(seed)
    report = {"checked": 0, "errors": [], "untouched_ok": []}
    for counts, out_features, in_features, grad_dtype in cases:
        rows = sum(counts)
        dy = torch.randn(rows, out_features, generator=gen).bfloat16().to(device)
        x = torch.randn(rows, in_features, generator=gen).bfloat16().to(device)
        main_grad = torch.empty(len(counts), out_features, in_features, dtype=grad_dtype, device=device)
        for e in range(len(counts)):
            main_grad[e] = torch.randn(out_features, in_features, generator=gen).to(grad_dtype)
        before = main_grad.clone()
        add_weight_grad_to_main_grad_by_kernel(main_grad, dy, x, torch.tensor(counts, device=device), config)
        diff = norm = 0.0
        untouched = True
        for e, (dy_e, x_e) in enumerate(zip(dy.split(counts), x.split(counts))):
            if counts[e] == 0:
                untouched &= torch.equal(main_grad[e], before[e])
            expected = before[e].double() + dy_e.double().t() @ x_e.double()
            diff += float((main_grad[e].double() - expected).square().sum())
            norm += float(expected.square().sum())
        report["checked"] += 1
        report["errors"].append((diff / norm) ** 0.5)
        report["untouched_ok"].append(bool(untouched))
    return report


def autograd_through_kernel() -> dict:
    """``grouped_expert_linear``'s backward with ``COMET_WGRAD_ACCUMULATION=kernel`` and a ``main_grad``: what it
    returns to autograd under Megatron's three conventions (flag, flag + ``zero_out_wgrad``, no flag)."""
    import os

    from comet_megatron.ops.grouped_linear import grouped_expert_linear

    os.environ["COMET_WGRAD_ACCUMULATION"] = "kernel"
    counts = [5, 0, 19]
    gen = torch.Generator().manual_seed(5)
    out = {}
    for convention in ("flag", "zero_out", "no_flag"):
        x = torch.randn(sum(counts), 32, generator=gen).bfloat16()
        dy = torch.randn(sum(counts), 16, generator=gen).bfloat16()
        weight = torch.randn(3, 16, 32, generator=gen).bfloat16().requires_grad_(True)
        weight.main_grad = torch.randn(3, 16, 32, generator=gen)
        if convention != "no_flag":
            weight.grad_added_to_main_grad = False
        if convention == "zero_out":
            weight.zero_out_wgrad = True
        expected = weight.main_grad.double().clone()
        for e, (dy_e, x_e) in enumerate(zip(dy.split(counts), x.split(counts))):
            expected[e] += dy_e.double().t() @ x_e.double()
        grouped_expert_linear(x, weight, torch.tensor(counts), counts, fuse_wgrad_into_main_grad=True).backward(dy)
        out[convention] = {
            "error": float((weight.main_grad.double() - expected).norm() / expected.norm()),
            "flag": getattr(weight, "grad_added_to_main_grad", None),
            "grad": None if weight.grad is None else list(weight.grad.shape),
            "grad_all_zero": None if weight.grad is None else bool((weight.grad == 0).all()),
        }
    return out


def tma_used() -> list[bool]:
    """Per case: whether the launcher hands the kernel TMA descriptors (needs rows, 16-byte aligned; interpreted)."""
    from comet_megatron.ops.grouped_linear import _wgrad_descriptors

    used = []
    for counts, out_features, in_features, _ in CASES:
        dy = torch.randn(sum(counts), out_features).bfloat16()
        x = torch.randn(sum(counts), in_features).bfloat16()
        used.append(_wgrad_descriptors(dy, x, SMALL_TILES["BM"], SMALL_TILES["BN"], SMALL_TILES["BK"]) is not None)
    return used


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
    for use_tma in ("False", "True"):
        _check(reports[use_tma], CASES, interpreted=True)
    # the TMA path runs on the cases with 16-byte aligned rows, among them experts with a partial last chunk
    assert reports["tma_used"] == [True, False, False, True]
    autograd = reports["autograd"]
    assert all(r["error"] < 1e-5 for r in autograd.values()), autograd
    assert autograd["flag"]["flag"] is True and autograd["flag"]["grad"] == [3, 16, 32]
    assert autograd["zero_out"]["grad_all_zero"] is True
    assert autograd["no_flag"]["flag"] is None and autograd["no_flag"]["grad"] is None


@pytest.mark.gpu
def test_wgrad_kernel_compiled():
    if selected_device() != "cuda" or not torch.cuda.is_available():
        pytest.skip("needs COMET_TEST_DEVICE=cuda and a GPU")
    from comet_megatron.ops.grouped_linear import _main_grad_reduce_descriptor, _wgrad_descriptors

    # the default takes both TMA paths on a Hopper GPU wherever the tensors are aligned
    rows = torch.empty(100, 256, dtype=torch.bfloat16, device="cuda")
    assert _wgrad_descriptors(rows, rows, 128, 128, 64) is not None
    assert _main_grad_reduce_descriptor(torch.empty(3, 256, 256, device="cuda"), 128, 128) is not None
    assert _main_grad_reduce_descriptor(torch.empty(3, 256, 256, device="cuda")[:, :, 1:], 128, 128) is None
    # every combination of pointer / TMA loads and in-program / TMA bulk reduce-add (the default: both TMA), each with
    # the default main_grad prefetch into L2 (evict_last; the small tiles' BN = 32 prefetch one line per row), and
    # the default paths without a prefetch and with a plain one
    for paths in (
        {"USE_TMA": False, "REDUCE_BY_TMA": False},
        {"REDUCE_BY_TMA": False},
        {"USE_TMA": False},
        {},
        {"PREFETCH_GRAD": 0},
        {"PREFETCH_GRAD": 1},
    ):
        _check(wgrad_errors("cuda", GPU_CASES, paths), GPU_CASES, interpreted=False)
        _check(wgrad_errors("cuda", CASES, dict(SMALL_TILES, **paths)), CASES, interpreted=False)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"BN": 512}, "BN=512: tile sides must be powers of two in \\[16, 256\\]"),
        ({"BK": 48}, "BK=48"),
        ({"BM": 8}, "BM=8"),
        ({"num_warps": 2}, "num_warps=2 must be 4 or 8"),
        ({"PREFETCH": True}, "unknown field\\(s\\) PREFETCH"),
        ({"PREFETCH_GRAD": 3}, "PREFETCH_GRAD=3 must be 0, 1 or 2"),
        ({"PREFETCH_GRAD": 1, "BN": 16}, "0 when BN < 32"),  # explicit; BN 16 alone turns the default off
    ],
)
def test_bad_wgrad_kernel_config_is_refused_before_launch(override, message):
    from comet_megatron.ops.grouped_linear import add_weight_grad_to_main_grad_by_kernel

    main_grad = torch.zeros(2, 32, 32)
    rows = torch.randn(8, 32).bfloat16()
    with pytest.raises(ValueError, match=message):
        add_weight_grad_to_main_grad_by_kernel(main_grad, rows, rows, torch.tensor([4, 4]), config=override)
    assert not main_grad.any()  # nothing ran


if __name__ == "__main__":
    report = {str(t): wgrad_errors("cpu", CASES, dict(SMALL_TILES, USE_TMA=t)) for t in (False, True)}
    report["tma_used"] = tma_used()
    report["autograd"] = autograd_through_kernel()
    print(json.dumps(report))
    sys.stdout.flush()
