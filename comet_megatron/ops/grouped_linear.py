"""Grouped expert linear layer ``y_e = x_e @ W_e^T`` with Megatron's weight-gradient conventions.

Weights are stacked ``[E_local, out, in]`` (``torch.nn.Linear`` layout per expert). The backward pass
honours Megatron's gradient-accumulation fusion: when the weight has a ``main_grad`` buffer and fusion
is on, the weight gradient is accumulated straight into ``main_grad`` (fp32) and a dummy gradient is
returned, exactly as ``LinearWithGradAccumulationAndAsyncCommunication`` does, so Megatron's DDP hooks
treat the parameter like any other.
"""

from __future__ import annotations

import torch


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


def accumulate_weight_grad(weight: torch.Tensor, wgrad: torch.Tensor, fuse_into_main_grad: bool):
    """The gradient to return for ``weight``, or a dummy after adding ``wgrad`` into ``main_grad``."""
    if fuse_into_main_grad and hasattr(weight, "main_grad"):
        weight.main_grad.add_(wgrad.to(weight.main_grad.dtype))
        if hasattr(weight, "grad_added_to_main_grad"):
            weight.grad_added_to_main_grad = True
            if getattr(weight, "zero_out_wgrad", False):
                return torch.zeros_like(weight)
            return torch.empty_like(weight)
        return None
    return wgrad


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
            wgrad = grouped_weight_grad(grad_out, x, counts, ctx.counts_host)
            grad_w = accumulate_weight_grad(weight, wgrad, ctx.fuse_wgrad)
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
        fuse_wgrad_into_main_grad: Megatron's ``gradient_accumulation_fusion``.

    Returns:
        ``[N, out]`` in ``x.dtype``.
    """
    return _GroupedExpertLinear.apply(x, weight, counts, counts_host, fuse_wgrad_into_main_grad)
