"""Routing cases run on every rank: Megatron's own MoELayer (alltoall + SequentialMLP) vs CometMoELayer
with the same weights and inputs. Each rank returns error metrics per case; the tests assert on them.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from tests.megatron_cpu import moe_test_config
from tests.multirank import selected_device


@dataclasses.dataclass(frozen=True)
class Case:
    topk: int = 2
    experts: int = 8
    hidden: int = 72  # deliberately not a multiple of 128 (or of 8)
    ffn: int = 40
    tokens: int = 24  # per rank
    gated: bool = True
    aux_loss: bool = False
    shared_expert: int | None = None
    # routing pressure, applied through constant input features and router-weight columns
    starve_expert: int | None = None  # never chosen
    all_to_expert: int | None = None  # every token's top-1 choice
    rank0_local_only: bool = False  # rank 0's tokens only go to rank 0's experts (it sends nothing)
    corrupt_comet_expert: bool = False  # negative control: the comparison must notice a wrong weight


CASES = {
    "top1": Case(topk=1),
    "top2": Case(topk=2),
    "top4": Case(topk=4, hidden=200),
    "gelu_not_gated": Case(topk=2, gated=False),
    "expert_gets_zero_tokens": Case(topk=2, starve_expert=1),
    "rank_sends_zero_tokens": Case(topk=2, rank0_local_only=True),
    "all_tokens_one_expert": Case(topk=1, all_to_expert=7),
    "aux_loss_and_shared_expert": Case(topk=2, aux_loss=True, shared_expert=48),
    "negative_control": Case(topk=2, corrupt_comet_expert=True),
}

_BIAS = 60.0


def _config(case: Case, ep: int, tp: int, device: str):
    return moe_test_config(
        hidden_size=case.hidden,
        ffn_hidden_size=case.ffn,
        moe_ffn_hidden_size=case.ffn,
        num_attention_heads=4,
        num_moe_experts=case.experts,
        moe_router_topk=case.topk,
        gated_linear_unit=case.gated,
        activation_func=F.silu if case.gated else F.gelu,
        expert_model_parallel_size=ep,
        # attention tensor parallelism with sequence parallelism (Megatron's MoE training requires it for TP > 1):
        # each rank routes its own sequence shard; experts are not tensor-parallel
        tensor_model_parallel_size=tp,
        sequence_parallel=tp > 1,
        expert_tensor_parallel_size=1,
        moe_router_load_balancing_type="aux_loss" if case.aux_loss else "none",
        moe_aux_loss_coeff=1e-2 if case.aux_loss else 0.0,
        moe_router_dtype="fp32",
        moe_router_pre_softmax=case.topk == 1,
        moe_shared_expert_intermediate_size=case.shared_expert,
        use_cpu_initialization=device == "cpu",
    )


def _force_routing(case: Case, router_weight: torch.Tensor, x: torch.Tensor, rank: int, ep: int) -> None:
    """Reserve input features 0 and 1 as constants; their router-weight columns set expert biases. ``rank`` is the
    rank in the expert-parallel group, ``ep`` its size."""
    e_local = case.experts // ep
    x[..., 0] = 1.0
    x[..., 1] = 1.0 if rank == 0 else 0.0
    router_weight[:, 0] = 0.0
    router_weight[:, 1] = 0.0
    if case.starve_expert is not None:
        router_weight[case.starve_expert, 0] = -_BIAS
    if case.all_to_expert is not None:
        router_weight[case.all_to_expert, 0] = _BIAS
    if case.rank0_local_only:
        router_weight[:e_local, 1] = _BIAS


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    denom = b.norm().item()
    return (a - b).norm().item() / (denom if denom > 0 else 1.0)


def run_cases(rank: int, ws: int, names: list[str], cases: dict[str, Case] | None = None, tp: int = 1) -> dict:
    """The cases on ``ws`` ranks: ``tp``-way tensor (and sequence) parallelism, expert parallelism over the rest."""
    from megatron.core import parallel_state as ps
    from megatron.core.models.gpt.moe_module_specs import get_moe_module_spec

    from comet_megatron.megatron import get_comet_moe_module_spec

    device = selected_device()
    dev = torch.device("cuda", torch.cuda.current_device()) if device == "cuda" else torch.device("cpu")
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed
    ep = ws // tp
    ps.initialize_model_parallel(
        tensor_model_parallel_size=tp, expert_model_parallel_size=ep, expert_tensor_parallel_size=1
    )
    if device == "cuda":
        model_parallel_cuda_manual_seed(1234)
    ep_rank = ps.get_expert_model_parallel_rank()
    results = {}
    cases = CASES if cases is None else cases
    for name in names:
        case = cases[name]
        torch.manual_seed(1000 + rank)
        config = _config(case, ep, tp, device)
        # ModuleSpec (0.16) and functools.partial (0.19) specs are both callables that build the layer.
        mega = get_moe_module_spec(use_te=False, num_experts=case.experts, moe_grouped_gemm=False)(config=config)
        comet = get_comet_moe_module_spec(use_te=False, num_experts=case.experts, backend="reference")(config=config)
        mega, comet = mega.to(dev), comet.to(dev)
        # Same weights: router (identical on every rank), local experts, shared experts.
        torch.manual_seed(77)
        router_w = torch.randn(case.experts, case.hidden) * 0.3
        torch.manual_seed(2000 + rank)
        x = torch.randn(case.tokens // 2, 2, case.hidden)
        _force_routing(case, router_w, x, ep_rank, ep)
        with torch.no_grad():
            mega.router.weight.copy_(router_w)
            comet.router.weight.copy_(router_w)
            for i, expert in enumerate(mega.experts.local_experts):
                # fresh random expert weights per rank (they differ across EP ranks)
                expert.linear_fc1.weight.normal_(0, 0.2)
                expert.linear_fc2.weight.normal_(0, 0.2)
                comet.experts.linear_fc1.weight[i].copy_(expert.linear_fc1.weight)
                comet.experts.linear_fc2.weight[i].copy_(expert.linear_fc2.weight)
            if case.shared_expert:
                comet.shared_experts.load_state_dict(mega.shared_experts.state_dict())
            if case.corrupt_comet_expert:
                comet.experts.linear_fc1.weight[0].mul_(1.01)
        x = x.to(dev)
        grad_out = torch.randn(x.shape, device=dev)

        seen = {}

        def record(key, layer, seen=seen):
            def hook(module, args):
                seen[key] = args[1].detach().to("cpu", torch.int64).clone()
                if key == "comet":
                    seen["send_splits"] = list(layer.token_dispatcher._dispatched.handle.send_splits)

            return hook

        handles = [
            mega.experts.register_forward_pre_hook(record("mega", mega)),
            comet.experts.register_forward_pre_hook(record("comet", comet)),
        ]
        outs, grads = {}, {}
        for key, layer in (("mega", mega), ("comet", comet)):
            xi = x.clone().requires_grad_(True)
            out, bias = layer(xi)
            assert bias is None
            (out * grad_out).sum().backward()
            outs[key] = out.detach()
            grads[key] = xi.grad.detach()
        for h in handles:
            h.remove()

        metrics = {
            "output": _rel(outs["comet"], outs["mega"]),
            "input_grad": _rel(grads["comet"], grads["mega"]),
            "router_grad": _rel(comet.router.weight.grad, mega.router.weight.grad),
            "tokens_per_expert_equal": bool(torch.equal(seen["comet"], seen["mega"])),
            "tokens_per_expert": seen["comet"].tolist(),
            "output_finite": bool(torch.isfinite(outs["comet"]).all()),
            "send_splits": seen["send_splits"],
            "parallel": (ps.get_tensor_model_parallel_world_size(), ep, config.sequence_parallel),
            "layer_types": (type(comet).__name__, type(comet.token_dispatcher).__name__, type(comet.experts).__name__),
        }
        for i, expert in enumerate(mega.experts.local_experts):
            metrics[f"fc1_grad_{i}"] = _rel(comet.experts.linear_fc1.weight.grad[i], expert.linear_fc1.weight.grad)
            metrics[f"fc2_grad_{i}"] = _rel(comet.experts.linear_fc2.weight.grad[i], expert.linear_fc2.weight.grad)
        if case.shared_expert:
            for (n, p_mega), p_comet in zip(mega.shared_experts.named_parameters(), comet.shared_experts.parameters()):
                metrics[f"shared_{n}_grad"] = _rel(p_comet.grad, p_mega.grad)
        results[name] = metrics
    ps.destroy_model_parallel()
    return results
