"""Comet's experts adding their weight gradients into ``main_grad`` under Megatron's real DDP (CPU/gloo, EP=2).

A Comet MoE layer (reference backend) wrapped in Megatron's ``DistributedDataParallel`` runs two micro-batches
(the first under ``no_sync``, as Megatron's schedule does) and ``finish_grad_sync``. Each way of bringing the expert
weight gradients into ``main_grad`` (``COMET_WGRAD_ACCUMULATION``: ``grouped`` and ``per_expert`` add them inside the
layer; ``megatron`` returns them for DDP's hook to add) must leave the same ``main_grad`` on every parameter, with
``overlap_grad_reduce`` on and off: no gradient added twice (the hook skips parameters marked
``grad_added_to_main_grad``) or lost (the hook's ``param.grad`` check under ``overlap_grad_reduce``).
"""

from __future__ import annotations

import os

import pytest
import torch

from tests.megatron_cpu import moe_test_config
from tests.multirank import run_ranks

EP = 2
HIDDEN, FFN, EXPERTS = 64, 48, 4
MODES = ("megatron", "grouped", "per_expert")


def _main_grads(rank: int, ws: int, overlap_grad_reduce: bool) -> dict:
    from megatron.core import parallel_state as ps
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig

    from comet_megatron.megatron import get_comet_moe_module_spec

    ps.initialize_model_parallel(tensor_model_parallel_size=1, expert_model_parallel_size=ws)
    config = moe_test_config(
        hidden_size=HIDDEN,
        ffn_hidden_size=FFN,
        moe_ffn_hidden_size=FFN,
        num_attention_heads=2,
        num_moe_experts=EXPERTS,
        moe_router_topk=2,
        moe_router_dtype="fp32",
        expert_model_parallel_size=ws,
    )
    results = {}
    for mode in MODES:
        os.environ["COMET_WGRAD_ACCUMULATION"] = mode
        torch.manual_seed(1000 + rank)  # same weights for every mode; experts differ per rank
        layer = get_comet_moe_module_spec(use_te=False, num_experts=EXPERTS, backend="reference")(config=config)
        ddp = DistributedDataParallel(
            config,
            DistributedDataParallelConfig(grad_reduce_in_fp32=True, overlap_grad_reduce=overlap_grad_reduce),
            layer,
        )
        ddp.zero_grad_buffer()
        for micro_batch in range(2):
            gen = torch.Generator().manual_seed(10 * micro_batch + rank)
            x = torch.randn(24, 1, HIDDEN, generator=gen)
            grad = torch.randn(24, 1, HIDDEN, generator=gen)
            if micro_batch == 0:
                with ddp.no_sync():
                    ddp(x)[0].backward(grad)
            else:
                ddp(x)[0].backward(grad)
        ddp.finish_grad_sync()
        experts = layer.experts
        results[mode] = {
            "fc1": experts.linear_fc1.weight.main_grad.clone(),
            "fc2": experts.linear_fc2.weight.main_grad.clone(),
            "router": layer.router.weight.main_grad.clone(),
            "grads_left": [n for n, p in layer.named_parameters() if p.grad is not None],
            "marked": bool(experts.linear_fc1.weight.grad_added_to_main_grad),
        }
    os.environ.pop("COMET_WGRAD_ACCUMULATION", None)
    ps.destroy_model_parallel()
    return results


@pytest.mark.parametrize("overlap_grad_reduce", [False, True])
def test_every_accumulation_leaves_ddp_the_same_main_grad(overlap_grad_reduce):
    for rank, results in enumerate(run_ranks(EP, _main_grads, overlap_grad_reduce, timeout=300)):
        want = results["megatron"]
        assert not want["marked"]  # DDP's hook added the returned gradients
        assert want["fc1"].abs().sum() > 0 and want["fc2"].abs().sum() > 0
        for mode in ("grouped", "per_expert"):
            got = results[mode]
            assert got["marked"], (rank, mode)
            assert got["grads_left"] == [], (rank, mode, got["grads_left"])
            for name in ("fc1", "fc2", "router"):
                torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6, msg=f"{rank} {mode} {name}")


_CARRIED_JOBS_RUN: list[int] = []


class _CarriedLinear(torch.autograd.Function):
    """y = x W^T whose weight gradient is summed into ``main_grad`` by a carried job, as the fused backward does with
    ``COMET_WGRAD_DEFER=1 COMET_WGRAD_CARRY=1``."""

    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(x, weight)
        return x @ weight.t()

    @staticmethod
    def backward(ctx, grad):
        from comet_megatron.ops.deferred_wgrad import DEFERRED_WEIGHT_GRADS, WeightGradJob
        from comet_megatron.ops.grouped_linear import grad_after_main_grad

        x, weight = ctx.saved_tensors

        def add():
            _CARRIED_JOBS_RUN.append(1)
            weight.main_grad.add_(grad.t() @ x)

        job = WeightGradJob(add, flops=1.0)
        DEFERRED_WEIGHT_GRADS.submit([job], depth=1, carry=True)
        return grad @ weight, grad_after_main_grad(weight)


def _carried_main_grad(rank: int, ws: int) -> dict:
    from megatron.core import parallel_state as ps
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig

    from comet_megatron.megatron.ddp_drain import install_deferred_wgrad_drain
    from comet_megatron.ops.deferred_wgrad import DEFERRED_WEIGHT_GRADS

    ps.initialize_model_parallel(tensor_model_parallel_size=1)
    install_deferred_wgrad_drain()
    install_deferred_wgrad_drain()  # idempotent: one wrapper around Megatron's own method
    out: dict = {"wrapped_once": not hasattr(DistributedDataParallel.finish_grad_sync.__wrapped__, "__wrapped__")}

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(5, HIDDEN))

        def forward(self, x):
            return _CarriedLinear.apply(x, self.weight)

    torch.manual_seed(3)
    model = Model()
    ddp = DistributedDataParallel(
        moe_test_config(hidden_size=HIDDEN, num_attention_heads=2, num_moe_experts=EXPERTS, moe_router_topk=2),
        DistributedDataParallelConfig(grad_reduce_in_fp32=True),
        model,
    )
    out["queued_after_each_backward"] = []
    for step in range(2):
        ddp.zero_grad_buffer()
        want = torch.zeros(5, HIDDEN)
        for micro_batch in range(3):
            gen = torch.Generator().manual_seed(100 * step + micro_batch)
            x, grad = torch.randn(7, HIDDEN, generator=gen), torch.randn(7, 5, generator=gen)
            want += grad.t() @ x
            ddp(x).backward(grad)
            out["queued_after_each_backward"].append(len(DEFERRED_WEIGHT_GRADS))
        ddp.finish_grad_sync()
        out[f"step{step}_error"] = (model.weight.main_grad - want).abs().max().item()
    ddp(torch.randn(2, HIDDEN)).sum().backward()  # queues one carried job (depth 1, carry)
    out["queued_before_zero"], runs_before_zero = len(DEFERRED_WEIGHT_GRADS), len(_CARRIED_JOBS_RUN)
    ddp.zero_grad_buffer()  # drops it (the gradients it would add are being zeroed): it must not run
    out["queued_after_zero"] = len(DEFERRED_WEIGHT_GRADS)
    out["dropped_job_ran"] = len(_CARRIED_JOBS_RUN) != runs_before_zero
    DEFERRED_WEIGHT_GRADS.drain()
    out["main_grad_after_zero_and_drain"] = model.weight.main_grad.abs().sum().item()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("COMET_WGRAD_DEFER", "1")
        try:
            DistributedDataParallel(
                moe_test_config(hidden_size=HIDDEN, num_attention_heads=2, num_moe_experts=EXPERTS, moe_router_topk=2),
                DistributedDataParallelConfig(grad_reduce_in_fp32=True, overlap_grad_reduce=True),
                Model(),
            )
            out["overlap_error"] = None
        except Exception as exc:  # noqa: BLE001 - reported to the test
            out["overlap_error"] = f"{type(exc).__name__}: {exc}"
    ps.destroy_model_parallel()
    return out


def test_megatron_ddp_drains_carried_weight_gradients_before_reducing():
    """COMET_WGRAD_CARRY: a job still queued when a backward pass returns is in main_grad once Megatron's DDP reduces
    gradients (finish_grad_sync), across three micro-batches and two steps; zero_grad_buffer drops queued jobs; a DDP
    with overlap_grad_reduce is refused while COMET_WGRAD_DEFER is on."""
    out = run_ranks(1, _carried_main_grad, timeout=300)[0]
    assert out["queued_after_each_backward"] == [1] * 6, out  # carried: the sums were not done when backward returned
    assert out["step0_error"] < 1e-5 and out["step1_error"] < 1e-5, out
    assert out["wrapped_once"], out
    assert out["queued_before_zero"] == 1 and out["queued_after_zero"] == 0, out
    assert not out["dropped_job_ran"] and out["main_grad_after_zero_and_drain"] == 0.0, out  # dropped, not run
    assert out["overlap_error"].startswith("CometConfigError") and "--overlap-grad-reduce" in out["overlap_error"], out
