"""Comparing a Comet model's checkpoint with Megatron's: the dist-checkpoint layout as comparable tuples, and which
of Comet's tensors holds a given Megatron parameter."""

from __future__ import annotations

import torch


def sharded_layout(sharded_state_dict) -> list[tuple]:
    """Every ShardedTensor/ShardedObject after applying factories, as comparable tuples."""
    from megatron.core.dist_checkpointing.mapping import ShardedObject, ShardedTensor, apply_factories
    from megatron.core.dist_checkpointing.utils import extract_sharded_base

    apply_factories(sharded_state_dict)
    flat, _ = extract_sharded_base(sharded_state_dict)
    items = []

    def visit(value):
        if isinstance(value, dict):
            for v in value.values():
                visit(v)
        elif isinstance(value, list):
            for v in value:
                visit(v)
        elif isinstance(value, ShardedTensor):
            items.append(
                (
                    "tensor",
                    value.key,
                    tuple(value.global_shape),
                    tuple(value.global_offset),
                    tuple(value.axis_fragmentations),
                    tuple(value.local_shape),
                    value.prepend_axis_num,
                    value.replica_id,
                )
            )
        elif isinstance(value, ShardedObject):
            items.append(("object", value.key, tuple(value.global_shape), tuple(value.global_offset), value.replica_id))

    visit(flat)
    return sorted(items, key=repr)


def comet_counterpart(comet_tensors: dict[str, torch.Tensor], megatron_name: str) -> torch.Tensor:
    """The tensor in ``comet_tensors`` (by Comet's parameter names) that holds Megatron's parameter ``megatron_name``:
    SequentialMLP's ``...mlp.experts.local_experts.{i}.linear_fc1.weight`` is row ``i`` of Comet's
    ``...mlp.experts.linear_fc1.weight``; every other parameter has the same name in both models."""
    if ".local_experts." not in megatron_name:
        return comet_tensors[megatron_name]
    head, tail = megatron_name.split(".local_experts.")
    index, rest = tail.split(".", 1)
    return comet_tensors[f"{head}.{rest}"][int(index)]
