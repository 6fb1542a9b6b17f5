"""Under the same seed, Comet's MoE layer starts from exactly the weights of Megatron's own layer.

Megatron's SequentialMLP draws each local expert's fc1 and then fc2 weight (fp32 master on the CPU, the
expert-parallel CUDA RNG stream on the GPU); CometGroupedMLP stacks the same draws, so a training run
with --moe-comet and one without, from one seed, start from the same model and their losses can be
compared step by step. Compared bitwise, fp32 and bf16, 1 and 2 expert-parallel ranks; the router and
shared experts, built by Megatron's code in both layers, too. A following draw from the default
generator must agree as well (the layers consumed the RNG identically).

GPU: ``COMET_TEST_DEVICE=cuda pytest tests/test_init_parity.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.multirank import run_ranks, selected_device


def _build_both(rank: int, ws: int, dtype_name: str, shared: int) -> dict:
    from megatron.core import parallel_state as ps
    from megatron.core.models.gpt.moe_module_specs import get_moe_module_spec
    from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed
    from megatron.core.transformer.transformer_config import TransformerConfig

    from comet_megatron.megatron import get_comet_moe_module_spec

    cuda = selected_device() == "cuda"
    ps.initialize_model_parallel(tensor_model_parallel_size=1, expert_model_parallel_size=ws)
    config = TransformerConfig(
        num_layers=2,
        hidden_size=64,
        ffn_hidden_size=96,
        moe_ffn_hidden_size=48,
        num_attention_heads=4,
        num_moe_experts=4,
        moe_router_topk=2,
        moe_token_dispatcher_type="alltoall",
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        params_dtype=getattr(torch, dtype_name),
        bf16=dtype_name == "bfloat16",
        expert_model_parallel_size=ws,
        moe_shared_expert_intermediate_size=shared or None,
        use_cpu_initialization=not cuda,
        perform_initialization=True,
        init_method_std=0.02,
    )
    layers = {}
    after = {}
    for name, spec in (
        ("megatron", get_moe_module_spec(use_te=False, num_experts=4, moe_grouped_gemm=False)),
        ("comet", get_comet_moe_module_spec(use_te=False, num_experts=4, backend="reference")),
    ):
        torch.manual_seed(1234)
        if cuda:
            model_parallel_cuda_manual_seed(1234)
        layers[name] = spec(config=config)
        after[name] = torch.rand(4)  # the default generator's next draw
        if cuda:
            from megatron.core.tensor_parallel.random import get_cuda_rng_tracker, get_expert_parallel_rng_tracker_name

            with get_cuda_rng_tracker().fork(get_expert_parallel_rng_tracker_name()):
                after[name] = torch.cat([after[name], torch.rand(4, device="cuda").cpu()])
    mega, comet = layers["megatron"], layers["comet"]
    out = {
        "router": torch.equal(mega.router.weight, comet.router.weight),
        "rng_after": torch.equal(after["megatron"], after["comet"]),
        "fc1": [
            torch.equal(e.linear_fc1.weight, comet.experts.linear_fc1.weight[i])
            for i, e in enumerate(mega.experts.local_experts)
        ],
        "fc2": [
            torch.equal(e.linear_fc2.weight, comet.experts.linear_fc2.weight[i])
            for i, e in enumerate(mega.experts.local_experts)
        ],
        "fc1_std": float(comet.experts.linear_fc1.weight.float().std()),
    }
    if shared:
        out["shared"] = all(
            torch.equal(a, b) for a, b in zip(mega.shared_experts.parameters(), comet.shared_experts.parameters())
        )
    return out


@pytest.mark.parametrize("ws", [1, 2])
@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
@pytest.mark.parametrize("shared", [0, 32], ids=["no_shared", "shared_expert"])
def test_same_seed_same_weights(ws, dtype_name, shared):
    if selected_device() == "cuda" and torch.cuda.device_count() < ws:
        pytest.skip(f"needs {ws} GPUs")
    for rank, result in enumerate(run_ranks(ws, _build_both, dtype_name, shared)):
        assert result["router"], f"rank {rank}: router weights differ"
        assert all(result["fc1"]) and all(result["fc2"]), f"rank {rank}: expert weights differ: {result}"
        assert result.get("shared", True), f"rank {rank}: shared-expert weights differ"
        assert result["rng_after"], f"rank {rank}: the layers consumed the RNG differently"
        assert 0.015 < result["fc1_std"] < 0.025  # initialized (init_method_std 0.02), not left empty
