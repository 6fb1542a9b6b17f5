"""Spec swap: a Megatron-Core GPT model whose MoE layers run on Comet.

    torchrun --nproc-per-node 2 examples/spec_swap.py [--backend auto|fused|reference] [--fp32]

Two transformer layers, MoE then dense (``moe_layer_freq=[1, 0]``), 8 experts top-2, expert parallel
over all ranks (NCCL, one GPU per rank). ``to_comet_spec`` rewrites the block spec Megatron builds:
the MoE layer becomes ``CometMoELayer`` (Comet's dispatcher and ``CometGroupedMLP`` experts), the
dense layer and attention stay Megatron's. One forward and backward on random tokens.

``make_config`` and ``build_model`` are also run on CPU/gloo by ``tests/test_spec.py``.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F
from megatron.core.models.gpt import GPTModel
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_decoder_block_spec
from megatron.core.transformer.transformer_config import TransformerConfig

from comet_megatron.megatron import CometMoELayer, to_comet_spec

VOCAB_SIZE = 128
SEQ_LEN = 32


def make_config(ep_size: int, **overrides) -> TransformerConfig:
    kwargs = dict(
        num_layers=2,
        hidden_size=64,
        ffn_hidden_size=128,
        num_attention_heads=4,
        num_moe_experts=8,
        moe_router_topk=2,
        moe_ffn_hidden_size=64,
        moe_layer_freq=[1, 0],  # layer 1 MoE, layer 2 dense
        moe_token_dispatcher_type="alltoall",  # Comet replaces the dispatcher; keep a stock type here
        moe_router_load_balancing_type="aux_loss",
        moe_aux_loss_coeff=1e-2,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,  # Comet's experts have no biases
        bias_activation_fusion=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        expert_model_parallel_size=ep_size,
    )
    kwargs.update(overrides)
    return TransformerConfig(**kwargs)


def build_model(config: TransformerConfig, backend: str = "auto") -> GPTModel:
    """Megatron's own GPT block spec, with its MoE layers swapped for Comet's."""
    block_spec = get_gpt_decoder_block_spec(config, use_transformer_engine=False)
    model = GPTModel(
        config=config,
        transformer_layer_spec=to_comet_spec(block_spec, backend=backend),
        vocab_size=VOCAB_SIZE,
        max_sequence_length=SEQ_LEN,
    )
    return model.bfloat16() if config.bf16 else model  # the cast Megatron's Float16Module does in training


def train_step(model: GPTModel, batch_size: int = 2, device=None) -> torch.Tensor:
    """Forward + backward on random token ids; returns the mean loss."""
    tokens = torch.randint(0, VOCAB_SIZE, (batch_size, SEQ_LEN), device=device)
    labels = torch.roll(tokens, shifts=-1, dims=1)
    position_ids = torch.arange(SEQ_LEN, device=device).expand(batch_size, SEQ_LEN)
    causal_mask = torch.ones(1, 1, SEQ_LEN, SEQ_LEN, dtype=torch.bool, device=device).triu(1)  # True = masked
    loss = model(tokens, position_ids, causal_mask, labels=labels).float().mean()
    loss.backward()
    return loss.detach()


def main() -> None:
    import torch.distributed as dist
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="auto", choices=("auto", "fused", "reference"))
    parser.add_argument("--fp32", action="store_true", help="fp32 parameters instead of bf16")
    args = parser.parse_args()

    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
    ep_size = dist.get_world_size()
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=1, expert_model_parallel_size=ep_size)
    model_parallel_cuda_manual_seed(1234)

    dtype = torch.float32 if args.fp32 else torch.bfloat16
    config = make_config(ep_size, params_dtype=dtype, bf16=dtype == torch.bfloat16)
    model = build_model(config, backend=args.backend)

    torch.manual_seed(dist.get_rank())  # different tokens on every rank
    loss = train_step(model, device=torch.cuda.current_device())
    moe_layers = [i for i, layer in enumerate(model.decoder.layers) if isinstance(layer.mlp, CometMoELayer)]
    if dist.get_rank() == 0:
        backend = model.decoder.layers[moe_layers[0]].mlp.comet_backend.name
        print(f"loss {loss.item():.4f}; Comet MoE layers {moe_layers} (backend {backend!r}), EP={ep_size}")

    parallel_state.destroy_model_parallel()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
