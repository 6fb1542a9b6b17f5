"""Grouped expert linear layer ``y_e = x_e @ W_e^T`` with Megatron's weight-gradient conventions.

Weights are stacked ``[E_local, out, in]`` (``torch.nn.Linear`` layout per expert). The backward pass
honours Megatron's gradient-accumulation fusion: when the weight has a ``main_grad`` buffer and fusion
is on, the weight gradient is accumulated straight into ``main_grad`` (fp32) and a dummy gradient is
returned, exactly as ``LinearWithGradAccumulationAndAsyncCommunication`` does, so Megatron's DDP hooks
treat the parameter like any other.

Comet's experts need no Apex kernel for that fusion, so they accumulate into ``main_grad`` whether or not
``gradient_accumulation_fusion`` is set (``COMET_WGRAD_ACCUMULATION``, see :func:`wgrad_accumulation_mode`),
and on the GPU the sum happens inside the GEMMs: with large experts one cuBLAS GEMM per expert with ``beta = 1``
and an fp32 output; with many small experts, whose per-expert launches would make the host the bottleneck, one
Triton launch for all of them (``kernels/wgrad.py``). No bf16 weight gradient is written, read back and added,
which is what Megatron's DDP hook does otherwise (``benchmarks/bench_wgrad.py`` measures every way).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable

import torch

from comet_megatron.ops.deferred_wgrad import wgrad_carry, wgrad_defer_depth
from comet_megatron.triton_support import HAVE_TRITON, interpreting, tma_descriptors
from comet_megatron.tuning import GEMM_TILE_SIDES, is_gemm_tile_side

WGRAD_ACCUMULATION_CHOICES = ("auto", "per_expert", "kernel", "grouped", "megatron")
# ``auto`` picks per-expert cuBLAS GEMMs when each expert's GEMM is at least this large (mean over the experts): below
# it the accumulating kernel's one launch beats the per-expert launches (benchmarks/bench_wgrad.py). Session 9 put it at
# 32 GFLOP; with the per-expert GEMMs on 3 streams (session 16) it moved down. Session 24 (one H200, EP=2, random
# routing, three runs, benchmarks/results/s24/wgrad/): Qwen2-57B's fc2 at the training shape (4096 tokens, 18.8 GFLOP
# per expert) per-expert 1.20-1.27 ms vs the kernel 1.48-1.49; DSv3-like's fc1 (16.0 GFLOP, 128 experts) per-expert
# 11.50-11.63 vs the kernel 10.77-11.14. The boundary lies between the two.
PER_EXPERT_MIN_FLOPS = 17e9
# The per-expert GEMMs go round-robin to this many CUDA streams (COMET_WGRAD_STREAMS): one expert's main loop runs
# beside another's fp32 read-modify-write epilogue. 3 streams: fc1 -2 to -9% on Mixtral / Phi / Qwen2-57B shapes
# (session 16, benchmarks/results/s16/call3_*).
PER_EXPERT_STREAMS = 3
# The accumulating grouped kernel's tile (kernels/wgrad.py).
# PREFETCH_GRAD (kernels/wgrad.py): 2 = the main_grad tile into L2 with evict_last first; -18 to -21% on the small
# experts that ``auto`` gives this kernel (DSv3 at EP=2, Qwen3 at EP=1: session 16, benchmarks/results/s16). The
# interpreter runs without it (it changes no value).
WGRAD_KERNEL_CONFIG = dict(BM=128, BN=128, BK=64, GROUP_M=8, num_warps=4, num_stages=3, PREFETCH_GRAD=2)


def _use_grouped_mm(x: torch.Tensor, *inner_dims: int) -> bool:
    # torch._grouped_mm runs on CUDA (sm90+) for bf16 with 16-byte aligned inner dimensions.
    return (
        x.is_cuda
        and hasattr(torch, "_grouped_mm")
        and x.dtype == torch.bfloat16
        and all(d % 8 == 0 for d in inner_dims)
        and torch.cuda.get_device_capability(x.device)[0] >= 9
    )


def _row_offsets(counts: torch.Tensor) -> torch.Tensor:
    return torch.cumsum(counts.to(torch.int64), 0).to(torch.int32)


def grouped_mm(x: torch.Tensor, weight: torch.Tensor, counts: torch.Tensor, counts_host: list[int]):
    """``[N, in] x [E, out, in] -> [N, out]``, rows of expert ``e`` are the ``e``-th segment of ``x``."""
    if weight.dtype == x.dtype and _use_grouped_mm(x, x.shape[1], weight.shape[1]):
        return torch._grouped_mm(x, weight.transpose(-2, -1), offs=_row_offsets(counts))
    out = x.new_empty(x.shape[0], weight.shape[1])
    for w, rows_in, rows_out in zip(weight, torch.split(x, counts_host), torch.split(out, counts_host)):
        torch.matmul(rows_in, w.t(), out=rows_out)
    return out


def grouped_weight_grad(grad_out: torch.Tensor, x: torch.Tensor, counts: torch.Tensor, counts_host: list[int]):
    """``dW_e = dy_e^T @ x_e`` for every expert: ``[E, out, in]`` (zeros for experts without rows)."""
    if grad_out.dtype == x.dtype and _use_grouped_mm(x, x.shape[1], grad_out.shape[1]):
        return torch._grouped_mm(grad_out.t(), x, offs=_row_offsets(counts))
    out = x.new_zeros(len(counts_host), grad_out.shape[1], x.shape[1])
    for e, (dy, xe) in enumerate(zip(torch.split(grad_out, counts_host), torch.split(x, counts_host))):
        if xe.shape[0]:
            torch.matmul(dy.t(), xe, out=out[e])
    return out


_SIDE_STREAMS: dict[torch.device, list] = {}


def _side_streams(device: torch.device, count: int) -> list:
    """``count`` CUDA streams of ``device`` beside the current one, made once per process."""
    streams = _SIDE_STREAMS.setdefault(device, [])
    while len(streams) < count:
        streams.append(torch.cuda.Stream(device))
    return streams[:count]


def add_weight_grad_to_main_grad(
    main_grad: torch.Tensor, grad_out: torch.Tensor, x: torch.Tensor, counts_host: list[int], streams: int = 1
) -> None:
    """``main_grad[e] += dy_e^T @ x_e`` for every expert, summed in ``main_grad``'s dtype by the GEMM.

    Args:
        main_grad: ``[E, out, in]`` fp32 (or the weights' dtype), updated in place.
        grad_out: ``[N, out]`` output-gradient rows, expert-major.
        x: ``[N, in]`` input rows, expert-major.
        counts_host: rows per expert, ``sum == N``.
        streams: the experts' accumulating cuBLAS GEMMs (GPU rows, fp32 ``main_grad``) go round-robin to this many
            streams (the current one first), so that one GEMM's read-modify-write epilogue can run beside another's
            main loop; the current stream waits for all of them before it returns, so the caller's later work (and
            the caching allocator's reuse of these tensors, which happens on the current stream) comes after them.
            The side streams are made on first use; this path reads host-side counts, so it is never inside a CUDA
            graph capture.
    """
    current = torch.cuda.current_stream(x.device) if x.is_cuda else None
    lanes = [current]
    if current is not None and streams > 1:
        lanes += _side_streams(x.device, streams - 1)
        for lane in lanes[1:]:
            lane.wait_stream(current)
    start = launched = 0
    for e, rows in enumerate(counts_host):
        if rows:
            dy_t, xe, acc = grad_out[start : start + rows].t(), x[start : start + rows], main_grad[e]
            if acc.dtype == x.dtype:
                torch.addmm(acc, dy_t, xe, out=acc)
            elif x.is_cuda:  # cuBLAS: bf16 products, fp32 accumulator and output, beta = 1 onto main_grad
                with torch.cuda.stream(lanes[launched % len(lanes)]):
                    torch.addmm(acc, dy_t, xe, out_dtype=acc.dtype, out=acc)
                launched += 1
            else:  # the CPU has no mixed-dtype addmm; the same sum through an fp32 product
                acc.add_(dy_t.to(acc.dtype) @ xe.to(acc.dtype))
        start += rows
    for lane in lanes[1:]:
        current.wait_stream(lane)


def _wgrad_descriptors(grad_out: torch.Tensor, x: torch.Tensor, block_m: int, block_n: int, block_k: int):
    """TMA descriptors of ``grad_out`` (block ``[BK, BM]``) and ``x`` (``[BK, BN]``) for the weight-gradient kernel,
    or ``None`` where TMA cannot read them (see :func:`~comet_megatron.triton_support.tma_capable`)."""
    return tma_descriptors((grad_out, [block_k, block_m]), (x, [block_k, block_n]))


def _main_grad_reduce_descriptor(main_grad: torch.Tensor, block_m: int, block_n: int):
    """TMA descriptor of ``main_grad`` ``[E, out, in]`` (block ``[1, BM, BN]``) for the kernel's bulk reduce-add, or
    ``None`` where the kernel adds in the program instead: a ``main_grad`` that is not fp32 (a bf16 tile would be
    rounded twice: to bf16, then by the add), the interpreter (it has no descriptor reduce), or where TMA cannot
    address it (see :func:`~comet_megatron.triton_support.tma_capable`)."""
    if main_grad.dtype != torch.float32 or interpreting():
        return None
    descriptors = tma_descriptors((main_grad, [1, block_m, block_n]))
    return None if descriptors is None else descriptors[0]


_WGRAD_PATH_FLAGS = ("USE_TMA", "REDUCE_BY_TMA")


def _wgrad_kernel_config(overrides: dict | None) -> dict:
    """``WGRAD_KERNEL_CONFIG`` with ``overrides``, refused before any launch when a field is unknown or a tile side is
    not what Triton and TMA accept (a power of two from 16 to 256: tensor-core minimum, TMA box limit)."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(WGRAD_KERNEL_CONFIG) - set(_WGRAD_PATH_FLAGS))
    if unknown:
        known = ", ".join([*WGRAD_KERNEL_CONFIG, *_WGRAD_PATH_FLAGS])
        raise ValueError(f"weight-gradient kernel config: unknown field(s) {', '.join(unknown)} (known: {known})")
    cfg = {**WGRAD_KERNEL_CONFIG, **overrides}
    bad = [f"{k}={cfg[k]!r}" for k in ("BM", "BN", "BK") if not is_gemm_tile_side(cfg[k])]
    if bad:
        low, high = GEMM_TILE_SIDES
        raise ValueError(
            f"weight-gradient kernel config: {', '.join(bad)}: tile sides must be powers of two in [{low}, {high}]"
        )
    if cfg["num_warps"] not in (4, 8) or type(cfg["num_stages"]) is not int or cfg["num_stages"] < 1:
        raise ValueError(
            f"weight-gradient kernel config: num_warps={cfg['num_warps']!r} must be 4 or 8 (whole warpgroups), "
            f"num_stages={cfg['num_stages']!r} an integer >= 1"
        )
    if "PREFETCH_GRAD" not in overrides and cfg["BN"] < 32:
        cfg["PREFETCH_GRAD"] = 0  # one prefetch per 32 columns: the default's hint does not apply to narrower tiles
    if cfg["PREFETCH_GRAD"] not in (0, 1, 2) or (cfg["PREFETCH_GRAD"] and cfg["BN"] < 32):
        raise ValueError(
            f"weight-gradient kernel config: PREFETCH_GRAD={cfg['PREFETCH_GRAD']!r} must be 0, 1 or 2, and 0 when "
            f"BN < 32 (one prefetch per 32 columns); BN={cfg['BN']}"
        )
    if interpreting():
        cfg["PREFETCH_GRAD"] = 0
    return cfg


def add_weight_grad_to_main_grad_by_kernel(
    main_grad: torch.Tensor, grad_out: torch.Tensor, x: torch.Tensor, counts: torch.Tensor, config: dict | None = None
) -> None:
    """:func:`add_weight_grad_to_main_grad` in one Triton launch for all experts (``kernels/wgrad.py``).

    Args:
        main_grad: ``[E, out, in]`` contiguous, updated in place.
        grad_out: ``[N, out]`` bf16 rows, expert-major, unit column stride.
        x: ``[N, in]`` same dtype and order.
        counts: ``int [E]`` rows per expert, on ``x``'s device.
        config: overrides of ``WGRAD_KERNEL_CONFIG`` (tile, warps, stages; ``USE_TMA=False`` forces pointer loads,
            ``REDUCE_BY_TMA=False`` the in-program read-modify-write of ``main_grad``).
    """
    cfg = _wgrad_kernel_config(config)
    from comet_megatron.kernels.wgrad import grouped_wgrad_accumulate_kernel
    from comet_megatron.launcher import launch

    num_experts, out_features, in_features = main_grad.shape
    if grad_out.stride(1) != 1:
        grad_out = grad_out.contiguous()
    if x.stride(1) != 1:
        x = x.contiguous()
    if not main_grad.is_contiguous():
        raise ValueError("main_grad must be contiguous to be summed into by the weight-gradient kernel")
    row_start = torch.zeros(num_experts + 1, dtype=torch.int64, device=x.device)
    torch.cumsum(counts, 0, out=row_start[1:])
    descriptors = None
    if cfg.pop("USE_TMA", True):
        descriptors = _wgrad_descriptors(grad_out, x, cfg["BM"], cfg["BN"], cfg["BK"])
    dy_desc, x_desc = descriptors or (grad_out, x)  # the pointer path ignores the descriptor arguments
    if cfg["PREFETCH_GRAD"] == 2 and x.is_cuda and torch.cuda.get_device_capability(x.device)[0] < 8:
        cfg["PREFETCH_GRAD"] = 1  # the L2 eviction priority needs sm_80; a plain prefetch works everywhere
    reduce_desc = None
    if cfg.pop("REDUCE_BY_TMA", True):
        reduce_desc = _main_grad_reduce_descriptor(main_grad, cfg["BM"], cfg["BN"])
    tiles = -(-out_features // cfg["BM"]) * -(-in_features // cfg["BN"])
    launch(
        grouped_wgrad_accumulate_kernel,
        (num_experts * tiles,),
        dy_desc,
        x_desc,
        reduce_desc if reduce_desc is not None else main_grad,
        grad_out,
        x,
        row_start,
        main_grad,
        out_features,
        in_features,
        grad_out.stride(0),
        x.stride(0),
        UPCAST=interpreting(),
        USE_TMA=descriptors is not None,
        REDUCE_BY_TMA=reduce_desc is not None,
        **cfg,
    )


def grad_after_main_grad(weight: torch.Tensor):
    """What to return for ``weight`` once its gradient is in ``main_grad`` (Megatron's convention)."""
    if hasattr(weight, "grad_added_to_main_grad"):
        weight.grad_added_to_main_grad = True
        if getattr(weight, "zero_out_wgrad", False):
            return torch.zeros_like(weight)
        return torch.empty_like(weight)
    return None


def wgrad_accumulation_mode() -> str:
    """``COMET_WGRAD_ACCUMULATION`` (``--moe-comet-wgrad-accumulation``):

    - ``auto`` (default): add the expert weight gradients into ``main_grad`` wherever the parameter has one; on
      the GPU by per-expert accumulating cuBLAS GEMMs when each expert's GEMM has at least
      ``PER_EXPERT_MIN_FLOPS``, else by the accumulating grouped Triton kernel; on the CPU (or without Triton)
      by one grouped GEMM and an add;
    - ``per_expert`` / ``kernel`` / ``grouped``: the same, always by that method (``kernel`` needs Triton, a GPU,
      bf16/fp16 rows and a contiguous ``main_grad``, else it is ``grouped``);
    - ``megatron``: only when ``gradient_accumulation_fusion`` is set (by a grouped GEMM and an add);
      otherwise return the bf16 gradient for Megatron's DDP hook to add, as Megatron's own experts do.

    Only ``per_expert`` and ``kernel`` sum in fp32; ``grouped`` adds the bf16 gradient, as DDP's hook does.
    """
    mode = os.environ.get("COMET_WGRAD_ACCUMULATION", "auto") or "auto"
    if mode not in WGRAD_ACCUMULATION_CHOICES:
        raise ValueError(
            f"COMET_WGRAD_ACCUMULATION={mode!r} is unknown: choose one of {', '.join(WGRAD_ACCUMULATION_CHOICES)}"
        )
    return mode


def wgrad_kernel_overrides() -> dict:
    """``COMET_WGRAD_KERNEL_CONFIG``: a JSON object of ``WGRAD_KERNEL_CONFIG`` fields that training's weight-gradient
    kernel uses instead of the defaults (for experiments and tuning runs), checked like every kernel config."""
    text = os.environ.get("COMET_WGRAD_KERNEL_CONFIG", "").strip()
    if not text:
        return {}
    try:
        overrides = json.loads(text)
        if not isinstance(overrides, dict):
            raise ValueError("not a JSON object")
        _wgrad_kernel_config(overrides)
    except ValueError as exc:
        raise ValueError(f"COMET_WGRAD_KERNEL_CONFIG={text!r}: {exc}") from None
    return overrides


def per_expert_streams() -> int:
    """``COMET_WGRAD_STREAMS``: how many CUDA streams the per-expert GEMMs use (default ``PER_EXPERT_STREAMS``; 1 =
    the current stream only)."""
    text = os.environ.get("COMET_WGRAD_STREAMS", "").strip()
    if not text:
        return PER_EXPERT_STREAMS
    if text not in ("1", "2", "3", "4", "5", "6", "7", "8"):
        raise ValueError(f"COMET_WGRAD_STREAMS={text!r}: give a number of CUDA streams from 1 to 8")
    return int(text)


def check_wgrad_environment() -> None:
    """Raise ``ValueError`` naming the variable if a ``COMET_WGRAD_*`` setting is bad: ``CometMoELayer``'s
    construction checks call this, so a bad one fails there, before any kernel runs (the backward reads them again
    when it uses them)."""
    wgrad_accumulation_mode()
    wgrad_kernel_overrides()
    per_expert_streams()
    wgrad_defer_depth()
    wgrad_carry()


def fuses_into_main_grad(gradient_accumulation_fusion: bool) -> bool:
    """Whether Comet's experts add their weight gradients into ``main_grad`` themselves."""
    return bool(gradient_accumulation_fusion) or wgrad_accumulation_mode() != "megatron"


def auto_accumulation_method(num_experts: int, out_features: int, in_features: int, num_rows: int, kernel_ok: bool):
    """``auto``'s choice on the GPU: per-expert cuBLAS GEMMs when each expert's GEMM (on average) has at least
    ``PER_EXPERT_MIN_FLOPS``, else the grouped kernel where it can run, else a grouped GEMM and an add."""
    if 2.0 * num_rows / max(num_experts, 1) * out_features * in_features >= PER_EXPERT_MIN_FLOPS:
        return "per_expert"
    return "kernel" if kernel_ok else "grouped"


def accumulation_method(weight: torch.Tensor, x: torch.Tensor, fuse_into_main_grad: bool) -> str | None:
    """How :func:`weight_grad` brings ``weight``'s gradient over the rows ``x`` into ``main_grad``: ``"per_expert"``,
    ``"kernel"`` or ``"grouped"``, or ``None`` when the gradient is returned to autograd instead."""
    if not (fuse_into_main_grad and hasattr(weight, "main_grad")):
        return None
    mode = wgrad_accumulation_mode()
    kernel_ok = (
        HAVE_TRITON
        and (x.is_cuda or interpreting())
        and weight.main_grad.is_contiguous()
        and x.dtype in (torch.bfloat16, torch.float16)
    )
    if mode == "auto" and x.is_cuda:
        return auto_accumulation_method(*weight.shape, x.shape[0], kernel_ok)
    if mode == "per_expert" or (mode == "kernel" and kernel_ok):
        return mode
    return "grouped"  # auto on the CPU, kernel where it cannot run, megatron with gradient_accumulation_fusion


def main_grad_accumulation(
    method: str, weight: torch.Tensor, grad_out: torch.Tensor, x: torch.Tensor, counts: torch.Tensor, counts_host
) -> Callable[[], None]:
    """The work that adds ``weight``'s gradient over the rows ``x`` into ``weight.main_grad`` by ``method`` (from
    :func:`accumulation_method`), not yet run: :func:`weight_grad` runs it at once, the fused backward may defer it
    (``comet_megatron/ops/deferred_wgrad.py``). The ``COMET_WGRAD_*`` settings are read now."""
    main_grad = weight.main_grad
    if method == "per_expert":
        return functools.partial(
            add_weight_grad_to_main_grad, main_grad, grad_out, x, counts_host, per_expert_streams()
        )
    if method == "kernel":
        return functools.partial(
            add_weight_grad_to_main_grad_by_kernel, main_grad, grad_out, x, counts, wgrad_kernel_overrides()
        )
    if method == "grouped":
        # promoted element by element: no full-size copy in main_grad's dtype
        return lambda: main_grad.add_(grouped_weight_grad(grad_out, x, counts, counts_host))
    raise ValueError(f"unknown weight-gradient accumulation method {method!r}")


def weight_grad(
    weight: torch.Tensor,
    grad_out: torch.Tensor,
    x: torch.Tensor,
    counts: torch.Tensor,
    counts_host: list[int],
    fuse_into_main_grad: bool,
):
    """The gradient autograd should return for ``weight`` (``[E, out, in]``) given ``grad_out`` ``[N, out]``
    and ``x`` ``[N, in]`` (expert-major rows, ``counts`` / ``counts_host`` per expert): ``dW`` itself, or —
    with ``fuse_into_main_grad`` and a ``main_grad`` buffer — what Megatron expects once ``dW`` has been
    added to ``main_grad``."""
    method = accumulation_method(weight, x, fuse_into_main_grad)
    if method is None:
        return grouped_weight_grad(grad_out, x, counts, counts_host)
    main_grad_accumulation(method, weight, grad_out, x, counts, counts_host)()
    return grad_after_main_grad(weight)


class _GroupedExpertLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, counts, counts_host, fuse_wgrad):
        ctx.save_for_backward(x, weight, counts)
        ctx.counts_host = counts_host
        ctx.fuse_wgrad = fuse_wgrad
        return grouped_mm(x, weight, counts, counts_host)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, counts = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            # dx_e = dy_e @ W_e: the same grouped product against the transposed weight.
            grad_x = grouped_mm(grad_out, weight.transpose(-2, -1), counts, ctx.counts_host)
        if ctx.needs_input_grad[1]:
            grad_w = weight_grad(weight, grad_out, x, counts, ctx.counts_host, ctx.fuse_wgrad)
        return grad_x, grad_w, None, None, None


def grouped_expert_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    counts: torch.Tensor,
    counts_host: list[int],
    fuse_wgrad_into_main_grad: bool = False,
) -> torch.Tensor:
    """Grouped linear over expert segments.

    Args:
        x: ``[N, in]`` rows grouped by expert (expert-major).
        weight: ``[E, out, in]``.
        counts: ``int64 [E]`` rows per expert (device tensor, used by grouped kernels).
        counts_host: the same counts as a Python list (used by the per-expert fallback).
        fuse_wgrad_into_main_grad: add the weight gradient into ``weight.main_grad`` where it exists
            (Megatron's gradient-accumulation fusion).

    Returns:
        ``[N, out]`` in ``x.dtype``.
    """
    return _GroupedExpertLinear.apply(x, weight, counts, counts_host, fuse_wgrad_into_main_grad)
