"""CometGroupedMLP: the local experts, stored as two stacked weights, checkpoint-compatible with
Megatron's SequentialMLP / TEGroupedMLP / GroupedMLP.

Parameters (``state_dict`` keys): ``linear_fc1.weight`` ``[E_local, F or 2F, H]`` and
``linear_fc2.weight`` ``[E_local, H, F]`` — one ``torch.nn.Linear`` layout per expert, stacked so that
grouped GEMMs and TMA descriptors read them without a copy. The dist-checkpoint view is the same as
Megatron's experts: ``{prefix}experts.linear_fc1.weight`` with the global expert index as a prepended
sharded axis and the SwiGLU halves sharded separately (or per-expert keys with
``singleton_local_shards``), so checkpoints move between Megatron's experts and these both ways.
"""

from __future__ import annotations

from functools import partial

import torch
from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory
from megatron.core.tensor_parallel.layers import set_tensor_model_parallel_attributes
from megatron.core.tensor_parallel.random import get_cuda_rng_tracker, get_expert_parallel_rng_tracker_name
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.moe.moe_utils import get_default_pg_collection
from megatron.core.transformer.utils import make_sharded_object_for_checkpoint

from comet_megatron.backends.base import ExpertWeights
from comet_megatron.backends.reference import grouped_mlp
from comet_megatron.errors import CometConfigError
from comet_megatron.ops.activation import ExpertActivation
from comet_megatron.ops.grouped_linear import fuses_into_main_grad


class StackedExpertWeight(torch.nn.Module):
    """Holds one ``[E_local, out, in]`` parameter named ``weight`` (keeps Megatron's key names)."""

    def __init__(self, num_local_experts: int, out_features: int, in_features: int, dtype, device):
        super().__init__()
        self.weight = torch.nn.Parameter(
            torch.empty(num_local_experts, out_features, in_features, dtype=dtype, device=device)
        )


class CometGroupedMLP(MegatronModule):
    """Local experts of a Comet MoE layer.

    Bound to a :class:`CometTokenDispatcher` (``CometMoELayer`` does this) it runs the dispatcher's
    backend — with the fused backend the token movement happens inside these GEMMs. Unbound (e.g.
    built into a stock Megatron ``MoELayer``) it is a plain grouped MLP over dispatched rows.
    """

    def __init__(self, num_local_experts: int, config, pg_collection=None, **_unused_builder_kwargs):
        super().__init__(config=config)
        if pg_collection is None:
            pg_collection = get_default_pg_collection()
        if config.add_bias_linear:
            raise CometConfigError(
                "CometGroupedMLP has no expert biases: set add_bias_linear=False (--disable-bias-linear)"
            )
        self.num_local_experts = num_local_experts
        self.ep_group = pg_collection.ep
        self.dp_group = pg_collection.expt_dp
        self.activation = ExpertActivation.from_config(config)
        self._comet_dispatcher = None
        self.register_load_state_dict_post_hook(_ignore_extra_state_keys)

        ffn = config.moe_ffn_hidden_size
        fc1_out = 2 * ffn if config.gated_linear_unit else ffn
        device = torch.device("cpu") if config.use_cpu_initialization else torch.cuda.current_device()
        self.linear_fc1 = StackedExpertWeight(
            num_local_experts, fc1_out, config.hidden_size, config.params_dtype, device
        )
        self.linear_fc2 = StackedExpertWeight(num_local_experts, config.hidden_size, ffn, config.params_dtype, device)
        if config.perform_initialization:
            self._initialize(config)
        expert_parallel = config.expert_model_parallel_size > 1
        for module, partition_dim in ((self.linear_fc1, 1), (self.linear_fc2, 2)):
            # Same attributes as Megatron's expert linears: expert grads live in expert-DP buckets.
            set_tensor_model_parallel_attributes(module.weight, is_parallel=True, dim=partition_dim, stride=1)
            module.weight.allreduce = not expert_parallel

    @torch.no_grad()
    def _initialize(self, config) -> None:
        """The values Megatron's SequentialMLP draws under the same seed: expert by expert, fc1 then fc2,
        from the expert-parallel CUDA RNG stream on the GPU, from an fp32 master weight on the CPU, so
        a --moe-comet run starts from the same model as the run it is compared with."""
        fc1, fc2 = self.linear_fc1.weight, self.linear_fc2.weight
        if config.use_cpu_initialization:
            for e in range(self.num_local_experts):
                for weight, init in ((fc1, config.init_method), (fc2, config.output_layer_init_method)):
                    master = torch.empty(weight.shape[1:], dtype=torch.float32)
                    init(master)
                    weight[e].copy_(master)
            return
        with get_cuda_rng_tracker().fork(get_expert_parallel_rng_tracker_name()):
            for e in range(self.num_local_experts):
                config.init_method(fc1[e])
                config.output_layer_init_method(fc2[e])

    def bind_dispatcher(self, dispatcher) -> None:
        """Run through ``dispatcher``'s backend (set by :class:`CometMoELayer`)."""
        self._comet_dispatcher = dispatcher
        dispatcher.expert_weights = self.expert_weights  # known before the experts run: a fused launch may start early

    def expert_weights(self) -> ExpertWeights:
        return ExpertWeights(
            fc1=self.linear_fc1.weight,
            fc2=self.linear_fc2.weight,
            activation=self.activation,
            fuse_wgrad_into_main_grad=fuses_into_main_grad(self.config.gradient_accumulation_fusion),
        )

    def forward(self, permuted_local_hidden_states, tokens_per_expert, permuted_probs, **_unused):
        """Megatron's experts contract: ``(hidden [N, H], tokens_per_expert [E_local], probs [N])
        -> (output, None)``."""
        weights = self.expert_weights()
        if self._comet_dispatcher is not None:
            output = self._comet_dispatcher.run_experts(permuted_local_hidden_states, permuted_probs, weights)
            return output, None
        counts_host = [int(c) for c in tokens_per_expert.tolist()]
        counts = tokens_per_expert.to(device=permuted_local_hidden_states.device, dtype=torch.int64)
        return grouped_mlp(permuted_local_hidden_states, permuted_probs, counts, counts_host, weights), None

    def backward_dw(self):
        """Weight gradients are computed in the backward pass itself (no delayed wgrad yet)."""

    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (), metadata: dict | None = None):
        """Expert weights in Megatron's dist-checkpoint layout (see the module docstring)."""
        singleton = bool((metadata or {}).get("singleton_local_shards", False))
        ep_rank = self.ep_group.rank()
        num_global = self.ep_group.size() * self.num_local_experts
        replica_id = (0, 0, self.dp_group.rank())
        layout = dict(
            sharded_offsets=tuple(sharded_offsets),
            first_global_expert=ep_rank * self.num_local_experts,
            num_global_experts=num_global,
            singleton=singleton,
        )
        state = {}
        for name, module in (("linear_fc1", self.linear_fc1), ("linear_fc2", self.linear_fc2)):
            glu = name == "linear_fc1" and bool(self.config.gated_linear_unit)
            state[f"{prefix}{name}.weight"] = ShardedTensorFactory(
                f"{prefix}experts.{name}.weight",
                module.weight,
                partial(_build_expert_shards, name=name, glu=glu, **layout),
                partial(_merge_expert_shards, glu=glu),
                replica_id,
            )
        # Megatron's expert linears also write one (empty) ``_extra_state`` object per expert, and its
        # load fails when a checkpoint lacks them: write the same objects, as Megatron's GroupedMLP does.
        for local in range(self.num_local_experts):
            global_expert = layout["first_global_expert"] + local
            if singleton:
                offsets = tuple(sharded_offsets)
            else:
                offsets = (*sharded_offsets, (len(sharded_offsets), global_expert, num_global))
            for name in ("linear_fc1", "linear_fc2"):
                key = f"{prefix}experts.{global_expert}.{name}" if singleton else f"{prefix}experts.{name}"
                state[f"{prefix}expert{global_expert}.{name}._extra_state"] = make_sharded_object_for_checkpoint(
                    None, f"{key}._extra_state", offsets, replica_id
                )
        return state


def _ignore_extra_state_keys(module, incompatible_keys):
    """A dist-checkpoint load returns the experts' ``_extra_state`` objects; there is nothing to restore."""
    for key in [k for k in incompatible_keys.unexpected_keys if k.endswith("._extra_state")]:
        incompatible_keys.unexpected_keys.remove(key)


def _build_expert_shards(
    key,
    data,
    replica_id,
    flattened_range,
    *,
    name,
    glu,
    sharded_offsets,
    first_global_expert,
    num_global_experts,
    singleton,
):
    """One stacked weight -> the ShardedTensors SequentialMLP would write for the same experts.

    Shard keys derive from ``key`` (the factory's key as the caller passes it), not from the layout alone:
    the optimizers build their state's sharded tensors from the model's factories with prefixed keys
    (``optimizer.state.exp_avg.<key>``), which must reach the shards."""
    suffix = f"{name}.weight"
    if not key.endswith(suffix):
        raise ValueError(f"CometGroupedMLP shard factory for {name}: key {key!r} does not end in {suffix}")
    stem = key[: -len(suffix)]  # '<prefix>experts.' (model) or 'optimizer.state.exp_avg.<prefix>experts.'
    if flattened_range is not None:
        raise NotImplementedError(
            "CometGroupedMLP weights cannot be saved in a flattened (fully_sharded_model_space) optimizer "
            "format; use Megatron's default dist-checkpoint format"
        )
    shards = []
    for local, expert in enumerate(data):
        global_expert = first_global_expert + local
        if singleton:
            base_key = f"{stem}{global_expert}.{suffix}"
            offsets = sharded_offsets
        else:
            base_key = key
            offsets = (*sharded_offsets, (len(sharded_offsets), global_expert, num_global_experts))
        axis = len(offsets)
        if not glu:
            shards.append(
                ShardedTensor.from_rank_offsets(
                    base_key, expert, *offsets, replica_id=replica_id, prepend_axis_num=axis
                )
            )
            continue
        gate, linear = torch.chunk(expert, 2, dim=0)
        if singleton:
            halves = ((f"{base_key}_w", gate, (axis, 0, 1)), (f"{base_key}_v", linear, (axis, 0, 1)))
        else:
            halves = ((base_key, gate, (axis, 0, 2)), (base_key, linear, (axis, 1, 2)))
        for half_key, half, fragment in halves:
            shards.append(
                ShardedTensor.from_rank_offsets(
                    half_key, half, *offsets, fragment, replica_id=replica_id, prepend_axis_num=axis
                )
            )
    return shards


def _merge_expert_shards(loaded, *, glu):
    """Inverse of :func:`_build_expert_shards`: the loaded list back to one stacked tensor."""
    if glu:
        return torch.stack([torch.cat(loaded[i : i + 2], dim=0) for i in range(0, len(loaded), 2)])
    return torch.stack(list(loaded))
