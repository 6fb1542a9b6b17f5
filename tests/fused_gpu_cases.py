"""GPU worker: CometMoELayer with the fused backend vs the reference backend (bf16) vs fp32 truth.

Tolerance follows FlashAttention-3's rule: the fused result's error against an fp32 computation of
the same function may be at most ``SLACK`` times the error PyTorch's own bf16 computation (the
reference backend in bf16) makes, plus a tiny absolute floor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import traceback

import torch

from tests.moe_cases import Case, _config, _force_routing

SLACK = 2.0

GPU_CASES = {
    "top2_tokens_not_tile_multiple": Case(topk=2, experts=8, hidden=256, ffn=192, tokens=1000),
    "top1": Case(topk=1, experts=8, hidden=256, ffn=128, tokens=640),
    "top4_16_experts": Case(topk=4, experts=16, hidden=192, ffn=96, tokens=768),
    "skewed_one_expert": Case(topk=2, experts=8, hidden=256, ffn=128, tokens=1024, all_to_expert=3),
    "expert_gets_zero_tokens": Case(topk=2, experts=8, hidden=256, ffn=128, tokens=512, starve_expert=5),
    "rank_sends_zero_tokens": Case(topk=2, experts=8, hidden=256, ffn=128, tokens=512, rank0_local_only=True),
    "gelu_not_gated_odd_hidden": Case(topk=2, experts=8, hidden=200, ffn=136, tokens=700, gated=False),
    "shared_expert_aux_loss": Case(
        topk=2, experts=8, hidden=256, ffn=128, tokens=512, shared_expert=256, aux_loss=True
    ),
    # the expert weight gradients summed into Megatron's fp32 main_grad by each of Comet's methods
    "main_grad_per_expert": Case(topk=2, experts=8, hidden=256, ffn=192, tokens=1000),
    "main_grad_kernel": Case(topk=4, experts=16, hidden=192, ffn=96, tokens=768, starve_expert=5),
    # both M-tile orders pinned (KernelConfig.own_rows_first): the default picks the order by shape, and every shape
    # above has few enough M-tiles per expert to get expert-major at EP=2
    "own_rows_first_tiles": Case(topk=2, experts=8, hidden=256, ffn=192, tokens=1000),
    "expert_major_tiles": Case(topk=4, experts=16, hidden=192, ffn=96, tokens=768),
    # the pushes into peers' buffers with 2-byte stores (KernelConfig.aligned_peer_stores off; on by default)
    "unaligned_peer_stores": Case(topk=2, experts=8, hidden=256, ffn=192, tokens=1000),
    # hidden 384: one and a half of fc2 ⊕ combine's 256-wide tiles (the default, tile loop fused with the K loop), and
    # pinned to 128-wide tiles with the loops apart (three tiles)
    "hidden_one_and_a_half_fc2_tiles": Case(topk=2, experts=8, hidden=384, ffn=192, tokens=1000),
    "fc2_narrow_tile_loop_apart": Case(topk=2, experts=8, hidden=384, ffn=192, tokens=1000),
}
# COMET_WGRAD_ACCUMULATION of the cases whose expert weights carry a main_grad (as under Megatron's DDP)
MAIN_GRAD_CASES = {"main_grad_per_expert": "per_expert", "main_grad_kernel": "kernel"}
# COMET_KERNEL_CONFIG of the cases that pin a KernelConfig field
KERNEL_CONFIG_CASES = {
    "own_rows_first_tiles": '{"own_rows_first": true}',
    "expert_major_tiles": '{"own_rows_first": false}',
    "unaligned_peer_stores": '{"aligned_peer_stores": false}',
    "fc2_narrow_tile_loop_apart": '{"fc2_block_n": 128, "fc2_flatten": false}',
}


def _rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


@contextlib.contextmanager
def _environment(name: str, value: str | None):
    """``name=value`` in the environment inside (unchanged for ``None``), the caller's value restored after."""
    user_value = os.environ.get(name)
    try:
        if value is not None:
            os.environ[name] = value
        yield
    finally:
        if user_value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = user_value


def run_fused_cases(rank: int, ws: int, names: list[str], calls: int = 2, fused_backward: bool = False) -> dict:
    from megatron.core import parallel_state as ps
    from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed

    os.environ["COMET_FUSED_BACKWARD"] = "1" if fused_backward else "0"
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.device("cuda", torch.cuda.current_device())
    ps.initialize_model_parallel(tensor_model_parallel_size=1, expert_model_parallel_size=ws)
    model_parallel_cuda_manual_seed(1234)
    results = {}
    for name in names:
        try:
            with (
                _environment("COMET_WGRAD_ACCUMULATION", MAIN_GRAD_CASES.get(name)),
                _environment("COMET_KERNEL_CONFIG", KERNEL_CONFIG_CASES.get(name)),
            ):
                results[name] = _run_case(GPU_CASES[name], rank, ws, calls, dev, main_grad=name in MAIN_GRAD_CASES)
        except Exception:  # one broken case must not hide the others' results
            results[name] = {"error": traceback.format_exc()}
    ps.destroy_model_parallel()
    return results


def _run_case(case, rank, ws, calls, dev, main_grad: bool = False):
    from comet_megatron.megatron import get_comet_moe_module_spec

    cfg32 = _config(case, ws, 1, "cuda")
    cfg16 = dataclasses.replace(cfg32, bf16=True, params_dtype=torch.bfloat16)
    spec = lambda b, n=case.experts: get_comet_moe_module_spec(use_te=False, num_experts=n, backend=b)  # noqa: E731
    fused = spec("fused")(config=cfg16).to(dev)
    ref16 = spec("reference")(config=cfg16).to(dev)
    ref32 = spec("reference")(config=cfg32).to(dev)
    assert fused.comet_backend.name == "fused"
    torch.manual_seed(77)
    router_w = torch.randn(case.experts, case.hidden) * 0.3
    torch.manual_seed(3000 + rank)
    with torch.no_grad():
        w1 = (torch.randn_like(fused.experts.linear_fc1.weight, dtype=torch.float32) * 0.05).bfloat16()
        w2 = (torch.randn_like(fused.experts.linear_fc2.weight, dtype=torch.float32) * 0.05).bfloat16()
    metrics_calls = []
    for _ in range(calls):  # fresh inputs each call: epochs and buffer parity advance
        x = torch.randn(case.tokens // 2, 2, case.hidden)
        _force_routing(case, router_w, x, rank, ws)
        x = x.bfloat16().to(dev)
        grad_out = torch.randn(x.shape, device=dev).bfloat16()
        with torch.no_grad():
            for layer in (fused, ref16, ref32):
                layer.router.weight.copy_(router_w.to(layer.router.weight.dtype))
                layer.experts.linear_fc1.weight.copy_(w1)
                layer.experts.linear_fc2.weight.copy_(w2)
                for p in layer.parameters():
                    p.grad = None
            if main_grad:  # what Megatron's DDP attaches; zeroed per call as its zero_grad_buffer does
                for weight in (fused.experts.linear_fc1.weight, fused.experts.linear_fc2.weight):
                    weight.main_grad = torch.zeros(weight.shape, dtype=torch.float32, device=dev)
                    weight.grad_added_to_main_grad = False
            if case.shared_expert:
                state = fused.shared_experts.state_dict()
                ref16.shared_experts.load_state_dict(state)
                ref32.shared_experts.load_state_dict(
                    {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in state.items()}
                )
        outs, grads = {}, {}
        for key, layer, dtype in (
            ("fused", fused, torch.bfloat16),
            ("ref16", ref16, torch.bfloat16),
            ("ref32", ref32, torch.float32),
        ):
            xi = x.to(dtype).clone().requires_grad_(True)
            out, _ = layer(xi)
            (out * grad_out.to(dtype)).sum().backward()
            outs[key] = out.detach().float()
            fc1, fc2 = layer.experts.linear_fc1.weight, layer.experts.linear_fc2.weight
            if main_grad and key == "fused":
                assert fc1.grad_added_to_main_grad and fc2.grad_added_to_main_grad
                fc1_grad, fc2_grad = fc1.main_grad, fc2.main_grad
            else:
                fc1_grad, fc2_grad = fc1.grad, fc2.grad
            grads[key] = {
                "input": xi.grad.float(),
                "fc1": fc1_grad.float(),
                "fc2": fc2_grad.float(),
                "router": layer.router.weight.grad.float(),
            }
        m = {"finite": bool(torch.isfinite(outs["fused"]).all())}
        m["output_fused"] = _rel(outs["fused"], outs["ref32"])
        m["output_bf16_ref"] = _rel(outs["ref16"], outs["ref32"])
        for g in ("input", "fc1", "fc2", "router"):
            m[f"{g}_grad_fused"] = _rel(grads["fused"][g], grads["ref32"][g])
            m[f"{g}_grad_bf16_ref"] = _rel(grads["ref16"][g], grads["ref32"][g])
        m["tokens_per_expert"] = fused.comet_backend.buffer.views is not None
        metrics_calls.append(m)
    return metrics_calls


def run_deferred_chain(rank: int, ws: int, depths=("0", "1", "3", "1c"), layers: int = 3) -> dict:
    """``layers`` fused CometMoELayers in a chain, weights with an fp32 ``main_grad``, two micro-batches, for each
    deferral depth (``wgrad_defer``; ``"1c"``: depth 1 carried into the next forward, whose wait slots run queued jobs
    on the lighter rank, drained after the last micro-batch as Megatron's DDP would) and both GPU accumulation
    methods: the ``main_grad`` bits must not depend on the variant, and nothing may stay queued once a backward returns
    unless carried."""
    from megatron.core import parallel_state as ps
    from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed

    from comet_megatron.megatron import get_comet_moe_module_spec
    from comet_megatron.ops.deferred_wgrad import DEFERRED_WEIGHT_GRADS

    os.environ["COMET_FUSED_BACKWARD"] = "1"
    dev = torch.device("cuda", torch.cuda.current_device())
    ps.initialize_model_parallel(tensor_model_parallel_size=1, expert_model_parallel_size=ws)
    model_parallel_cuda_manual_seed(1234)
    case = Case(topk=2, experts=8, hidden=256, ffn=192, tokens=1000)
    cfg = dataclasses.replace(_config(case, ws, 1, "cuda"), bf16=True, params_dtype=torch.bfloat16)
    spec = get_comet_moe_module_spec(use_te=False, num_experts=case.experts, backend="fused")
    chain = [spec(config=cfg).to(dev) for _ in range(layers)]
    assert all(layer.comet_backend.name == "fused" for layer in chain)
    torch.manual_seed(4000 + rank)
    with torch.no_grad():
        for index, layer in enumerate(chain):
            for p in layer.parameters():
                p.copy_((torch.randn_like(p, dtype=torch.float32) * 0.05).to(p.dtype))
            # a token's top-k favours experts whose router rows are longer (their logits vary more): every rank sends
            # most rows to rank 0's experts in even layers and to the last rank's in odd ones, so at EP > 1 some rank
            # is far behind the busiest in every layer, and its forward wait slot has room for carried jobs
            first_half = layer.router.weight[: case.experts // 2]
            first_half.mul_(3.0 if index % 2 == 0 else 1 / 3)
    inputs = [torch.randn(case.tokens // 2, 2, case.hidden, device=dev).bfloat16() for _ in range(2)]
    grad_outs = [torch.randn(x.shape, device=dev).bfloat16() for x in inputs]
    report: dict = {"same_bits": {}, "queued_after_backward": {}, "main_grad_norm": {}}
    flops_run_before = DEFERRED_WEIGHT_GRADS.flops_run_within
    try:
        for method in ("per_expert", "kernel"):
            bits = {}
            for depth in depths:
                experts = []
                for layer in chain:
                    layer.comet_backend.wgrad_defer = int(depth.rstrip("c"))
                    layer.comet_backend.wgrad_carry = depth.endswith("c")
                    for weight in (layer.experts.linear_fc1.weight, layer.experts.linear_fc2.weight):
                        weight.main_grad = torch.zeros(weight.shape, dtype=torch.float32, device=dev)
                        weight.grad_added_to_main_grad = False
                        weight.grad = None
                        experts.append(weight)
                queued = []
                with _environment("COMET_WGRAD_ACCUMULATION", method):
                    for x, grad_out in zip(inputs, grad_outs):
                        y = x.clone().requires_grad_(True)
                        for layer in chain:
                            y, _ = layer(y)
                        (y.float() * grad_out.float()).sum().backward()
                        queued.append(len(DEFERRED_WEIGHT_GRADS))
                    DEFERRED_WEIGHT_GRADS.drain()
                torch.cuda.synchronize()
                assert all(w.grad_added_to_main_grad for w in experts)
                bits[depth] = [w.main_grad.view(torch.int32).clone() for w in experts]
                report["queued_after_backward"][f"{method}/{depth}"] = queued
                report["main_grad_norm"][f"{method}/{depth}"] = sum(w.main_grad.norm().item() for w in experts)
            for depth in depths:
                report["same_bits"][f"{method}/{depth}"] = all(
                    torch.equal(a, b) for a, b in zip(bits[depth], bits[depths[0]])
                )
    finally:
        ps.destroy_model_parallel()
    # FLOPs of carried jobs run in forward wait slots (only a rank behind the busiest one runs any)
    report["flops_run_in_forward"] = DEFERRED_WEIGHT_GRADS.flops_run_within - flops_run_before
    return report
