"""Collectives over the expert-parallel group used by the reference backend (autograd-aware)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def all_gather_counts(tokens_per_expert: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """Counts matrix ``int64 [ep, E]`` from every rank's ``int64 [E]`` slots-per-expert vector."""
    ep = dist.get_world_size(group)
    if ep == 1:
        return tokens_per_expert.unsqueeze(0)
    if tokens_per_expert.is_cuda:  # one collective into one tensor: no list of parts to copy and stack
        out = tokens_per_expert.new_empty(ep, tokens_per_expert.shape[0])
        dist.all_gather_into_tensor(out, tokens_per_expert.contiguous(), group=group)
        return out
    parts = [torch.empty_like(tokens_per_expert) for _ in range(ep)]  # gloo (CPU tests)
    dist.all_gather(parts, tokens_per_expert.contiguous(), group=group)
    return torch.stack(parts)


class _AllToAll(torch.autograd.Function):
    """Variable-size all_to_all on dim 0; backward is the transposed all_to_all."""

    @staticmethod
    def forward(ctx, x, output_splits, input_splits, group):
        ctx.splits = (output_splits, input_splits)
        ctx.group = group
        return _all_to_all(x, output_splits, input_splits, group)

    @staticmethod
    def backward(ctx, grad):
        output_splits, input_splits = ctx.splits
        return _all_to_all(grad.contiguous(), input_splits, output_splits, ctx.group), None, None, None


def _all_to_all(x: torch.Tensor, output_splits: list[int], input_splits: list[int], group) -> torch.Tensor:
    out = x.new_empty((sum(output_splits),) + tuple(x.shape[1:]))
    if dist.get_world_size(group) == 1:
        out.copy_(x)
        return out
    dist.all_to_all_single(out, x.contiguous(), output_splits, input_splits, group=group)
    return out


def all_to_all(x: torch.Tensor, output_splits: list[int], input_splits: list[int], group) -> torch.Tensor:
    """Autograd-aware ``all_to_all_single`` with host split sizes (rows per peer)."""
    return _AllToAll.apply(x, output_splits, input_splits, group)
