"""WORK IN PROGRESS (not collected by pytest; see the status below) - distributed-optimizer state across
Megatron's experts and Comet's.

Status (2026-11-23, session 2): run with ``python -m pytest -q notes/wip/optimizer_interchange_harness.py``.
All 8 combinations fail, so the harness does not yet isolate Comet's behaviour:
- Megatron's own load of a fully-reshardable distributed-optimizer checkpoint without Apex/TE raises
  ``KeyError: 'step'`` (0.16.1 and 0.19.2; ``_tolerate_missing_step`` below works around it);
- megatron -> megatron still ends 2e-2 away after the resumed step (harness problem, not found yet);
  dp_reshardable loads fail with "a view of a leaf Variable ... in-place" for every pair (CPU shims?);
- comet -> anything, fully_reshardable: saving raises "Shards ... overlap" for the stacked fc1 halves - a
  candidate bug in CometGroupedMLP's ShardedTensorFactory under the distributed optimizer's model-space
  state, to confirm on the GPU (``notes/device/s2_call5_resume_small.sh``) and fix;
- megatron -> comet, fully_reshardable: "Invalid access pattern" for the fc1 halves at load.

Intended check:
What a training resume across ``--moe-comet`` does, on CPU/gloo with 2 expert-parallel ranks: a MoE layer
(Megatron's SequentialMLP experts, or Comet's stacked ones) wrapped in Megatron's DDP and distributed optimizer
(Adam, fp32) takes two steps, saves model + optimizer with ``dist_checkpointing`` in the
``fully_reshardable`` format (what ``--dist-ckpt-optim-fully-reshardable`` writes), and the other layout loads
both. One more identical step must then give the same weights as the source taking that step: Adam's
moments went to the right experts. Negative control: the same target with a fresh optimizer (weights only)
ends elsewhere, so the comparison does see optimizer state.

megatron-core's optimizer and DDP create a few tensors on ``"cuda"`` unconditionally; the test processes map
those to the CPU (``apply_cpu_optimizer_shims`` below).
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from tests.multirank import run_ranks

EP = 2
HIDDEN, FFN, EXPERTS = 256, 64, 4  # large enough that every DP shard of the router holds elements
LR = 1e-2


def apply_cpu_optimizer_shims() -> None:
    """Megatron's DDP and (distributed) optimizer on CPU: a few tensors are created on ``"cuda"``
    unconditionally (found-inf flags, dummy overflow buffers, ``Tensor.cuda()`` in the state-dict gathers),
    and parameters are accepted only if ``Tensor.type()`` names a CUDA type. Maps both to the CPU."""
    import functools

    if getattr(torch, "_comet_cpu_optimizer_shims", False):
        return
    torch._comet_cpu_optimizer_shims = True
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    original_type = torch.Tensor.type

    def cuda_type_name(self, dtype=None, non_blocking=False, **kwargs):
        if dtype is None:
            name = original_type(self)
            return name if name.startswith("torch.cuda.") else name.replace("torch.", "torch.cuda.", 1)
        return original_type(self, dtype, non_blocking, **kwargs)

    torch.Tensor.type = cuda_type_name

    def on_cpu(factory):
        @functools.wraps(factory)
        def wrapper(*args, **kwargs):
            if str(kwargs.get("device", "")).startswith("cuda"):
                kwargs["device"] = "cpu"
            return factory(*args, **kwargs)

        return wrapper

    for name in ("tensor", "zeros", "ones", "empty", "empty_like", "zeros_like", "full", "arange"):
        setattr(torch, name, on_cpu(getattr(torch, name)))


def _config():
    from megatron.core.transformer.transformer_config import TransformerConfig

    return TransformerConfig(
        num_layers=1,
        hidden_size=HIDDEN,
        ffn_hidden_size=FFN,
        moe_ffn_hidden_size=FFN,
        num_attention_heads=2,
        num_moe_experts=EXPERTS,
        moe_router_topk=2,
        moe_token_dispatcher_type="alltoall",
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        bias_activation_fusion=False,
        params_dtype=torch.float32,
        use_cpu_initialization=True,
        moe_router_load_balancing_type="none",
        moe_router_dtype="fp32",
        expert_model_parallel_size=EP,
    )


def _layer(kind: str, rank: int):
    """The layer with weights fixed by seed (identical across kinds; experts differ per rank)."""
    from megatron.core.models.gpt.moe_module_specs import get_moe_module_spec

    from comet_megatron.megatron import get_comet_moe_module_spec

    config = _config()
    if kind == "megatron":
        layer = get_moe_module_spec(use_te=False, num_experts=EXPERTS, moe_grouped_gemm=False)(config=config)
    else:
        layer = get_comet_moe_module_spec(use_te=False, num_experts=EXPERTS, backend="reference")(config=config)
    gen = torch.Generator().manual_seed(123)
    router = torch.randn(EXPERTS, HIDDEN, generator=gen) * 0.05
    gen = torch.Generator().manual_seed(1000 + rank)
    with torch.no_grad():
        layer.router.weight.copy_(router)
        for e in range(EXPERTS // EP):
            w1 = torch.randn(2 * FFN, HIDDEN, generator=gen) * 0.05
            w2 = torch.randn(HIDDEN, FFN, generator=gen) * 0.05
            if kind == "megatron":
                layer.experts.local_experts[e].linear_fc1.weight.copy_(w1)
                layer.experts.local_experts[e].linear_fc2.weight.copy_(w2)
            else:
                layer.experts.linear_fc1.weight[e].copy_(w1)
                layer.experts.linear_fc2.weight[e].copy_(w2)
    return layer


def _wrap(layer):
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    ddp = DistributedDataParallel(
        layer.config, DistributedDataParallelConfig(use_distributed_optimizer=True, grad_reduce_in_fp32=True), layer
    )
    optimizer = get_megatron_optimizer(
        OptimizerConfig(optimizer="adam", lr=LR, use_distributed_optimizer=True, bf16=False, clip_grad=0.0), [ddp]
    )
    return ddp, optimizer


def _step(ddp, optimizer, rank: int, step: int) -> None:
    gen = torch.Generator().manual_seed(50 * step + rank)
    x = torch.randn(16, 1, HIDDEN, generator=gen)
    grad = torch.randn(16, 1, HIDDEN, generator=gen)
    ddp.zero_grad_buffer()
    optimizer.zero_grad()
    out, _ = ddp(x)
    out.backward(grad)
    ddp.finish_grad_sync()
    ok, _, _ = optimizer.step()
    assert ok


def _expert_weights(layer) -> list[torch.Tensor]:
    if hasattr(layer.experts, "local_experts"):
        return [
            w.detach().clone() for m in layer.experts.local_experts for w in (m.linear_fc1.weight, m.linear_fc2.weight)
        ]
    fc1, fc2 = layer.experts.linear_fc1.weight, layer.experts.linear_fc2.weight
    return [w.detach().clone() for e in range(fc1.shape[0]) for w in (fc1[e], fc2[e])]


def _init_adam_state(optimizer) -> None:
    """A fresh torch Adam has no state; Megatron's loading path (without Apex/TE) reads each parameter's
    ``step``, so give every parameter the state a first step would create, as Megatron's init_state_fn does
    for the moments."""
    for chained in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = chained.optimizer
        for group in inner.param_groups:
            for p in group["params"]:
                if not inner.state[p]:
                    inner.state[p] = {
                        "step": torch.tensor(0.0),
                        "exp_avg": torch.zeros_like(p.data),
                        "exp_avg_sq": torch.zeros_like(p.data),
                    }


def _tolerate_missing_step() -> None:
    """Megatron-Core (0.16.1 and 0.19.2) without Apex/TE keeps torch Adam's per-parameter ``step`` tensor in
    the state it copies a fully-reshardable checkpoint into, but the checkpoint holds only the parameter and
    the moments: ``_set_main_param_and_optimizer_states`` raises ``KeyError: 'step'`` even for Megatron's own
    layers (the step itself is restored from the param groups). Copy the keys the checkpoint has."""
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    original = DistributedOptimizer._set_main_param_and_optimizer_states
    if getattr(original, "_tolerates_missing_step", False):
        return

    def set_states(self, model_param, tensors):
        group_index, group_order = self.model_param_group_index_map[model_param]
        main_param = self.optimizer.param_groups[group_index]["params"][group_order]
        state = self.optimizer.state[main_param]
        step = state.pop("step", None)
        try:
            return original(self, model_param, tensors)
        finally:
            if step is not None:
                state["step"] = step

    set_states._tolerates_missing_step = True
    DistributedOptimizer._set_main_param_and_optimizer_states = set_states


def _state(ddp, optimizer, sharding: str, is_loading: bool) -> dict:
    metadata = {"distrib_optim_sharding_type": sharding}
    state = {"model": ddp.sharded_state_dict(metadata=metadata)}
    state["optimizer"] = optimizer.sharded_state_dict(state, is_loading=is_loading, metadata=metadata)
    return state


def _run(rank: int, ws: int, root: str, source: str, target: str, sharding: str) -> dict:
    import torch.distributed as dist
    from megatron.core import dist_checkpointing
    from megatron.core import parallel_state as ps

    from tests.megatron_cpu import apply_cpu_checkpoint_shims

    apply_cpu_checkpoint_shims()
    apply_cpu_optimizer_shims()
    _tolerate_missing_step()
    ps.initialize_model_parallel(tensor_model_parallel_size=1, expert_model_parallel_size=ws)
    directory = os.path.join(root, f"{source}_to_{target}_{sharding}")
    if rank == 0:
        os.makedirs(directory, exist_ok=True)
    dist.barrier()

    src_ddp, src_opt = _wrap(_layer(source, rank))
    for step in (1, 2):
        _step(src_ddp, src_opt, rank, step)
    dist_checkpointing.save(_state(src_ddp, src_opt, sharding, is_loading=False), directory)
    _step(src_ddp, src_opt, rank, 3)
    expected = _expert_weights(src_ddp.module)

    results = {}
    for load_optimizer in (True, False):
        dst_ddp, dst_opt = _wrap(_layer(target, rank))
        _init_adam_state(dst_opt)
        state = _state(dst_ddp, dst_opt, sharding, is_loading=True)
        if not load_optimizer:
            state.pop("optimizer")
        try:
            loaded = dist_checkpointing.load(state, directory)
        except Exception as exc:  # noqa: BLE001 - reported to the test
            results[load_optimizer] = f"load failed: {type(exc).__name__}: {str(exc)[:300]}"
            continue
        dst_ddp.load_state_dict(loaded["model"], strict=False)  # strict=False: Comet's _extra_state keys
        if load_optimizer:
            dst_opt.load_state_dict(loaded["optimizer"])
        _step(dst_ddp, dst_opt, rank, 3)
        got = _expert_weights(dst_ddp.module)
        results[load_optimizer] = max(((g - w).norm() / w.norm()).item() for g, w in zip(got, expected))
    return results


@pytest.fixture(scope="module")
def ckpt_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("optim_interchange"))


@pytest.mark.parametrize("sharding", ["fully_reshardable", "dp_reshardable"])
@pytest.mark.parametrize(
    "source, target", [("megatron", "comet"), ("comet", "megatron"), ("megatron", "megatron"), ("comet", "comet")]
)
def test_fully_reshardable_optimizer_state_crosses_layouts(ckpt_root, source, target, sharding):
    for rank, result in enumerate(run_ranks(EP, _run, ckpt_root, source, target, sharding, timeout=300)):
        with_state, weights_only = result[True], result[False]
        assert isinstance(with_state, float), f"rank {rank}: {with_state}"
        assert with_state < 1e-6, f"rank {rank}: weights after the resumed step differ by {with_state:.2e}"
        # the control: without the optimizer state the same step lands elsewhere
        assert isinstance(weights_only, float) and weights_only > 1e-3, f"rank {rank}: control {weights_only}"
