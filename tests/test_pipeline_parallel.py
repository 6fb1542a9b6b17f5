"""Pipeline parallelism (the layout of the multi-node example scripts: PP > 1): a GPT model split over 2 stages,
Comet's spec swap against Megatron's unmodified spec, on 2 gloo ranks (PP=2, EP=1 per stage).

Four layers, MoE / dense / dense / MoE (``moe_layer_freq=[1, 0, 0, 1]``), so each stage holds one MoE layer at a
different global layer number. Per stage:

* the same layer types as Megatron's model, with Comet's layer where Megatron has its MoE layer;
* the dist-checkpoint layout (keys with global layer numbers, shapes, offsets, replica ids) equals Megatron's;
* Comet's checkpoint, written by both stages, loads into Megatron's model (``strict="raise_all"``): every
  parameter equal, none left at its initial value;
* one forward and backward through both stages (activations and their gradient sent between the ranks as
  Megatron's schedule does): the loss and every parameter gradient equal Megatron's (fp32, reference backend).

Then the fused backend (interpreted) under Megatron's own 1F1B schedule and DDP, with its weight gradients deferred
across layers and micro-batches (``tests/pipeline_deferred_wgrad.py``).
"""

from __future__ import annotations

import contextlib
import functools
import os

import pytest
import torch

from tests.checkpoint_layout import comet_counterpart, sharded_layout
from tests.megatron_cpu import apply_cpu_checkpoint_shims, build_stage_gpt, pipeline_gpt_config
from tests.multirank import run_ranks

LAYER_FREQ = [1, 0, 0, 1]
VOCAB, SEQ, BATCH = 64, 16, 2
TOL = 1e-5


def _build(config, comet: bool):
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_decoder_block_spec

    from comet_megatron.megatron import to_comet_spec

    spec = get_gpt_decoder_block_spec(config, use_transformer_engine=False)
    if comet:
        spec = to_comet_spec(spec, backend="reference")
    return build_stage_gpt(config, spec, VOCAB, SEQ)


def _pipeline_step(model, tokens, rank: int) -> float | None:
    """Stage 0 sends its output to stage 1 and receives the gradient back, as Megatron's schedule does."""
    import torch.distributed as dist

    positions = torch.arange(SEQ).expand(BATCH, SEQ)
    mask = torch.ones(1, 1, SEQ, SEQ, dtype=torch.bool).triu(1)
    if rank == 0:
        hidden = model(tokens, positions, mask)
        dist.send(hidden.detach().contiguous(), 1)
        grad = torch.empty_like(hidden)
        dist.recv(grad, 1)
        hidden.backward(grad)
        return None
    received = torch.empty(SEQ, BATCH, model.config.hidden_size)
    dist.recv(received, 0)
    received.requires_grad_(True)
    model.set_input_tensor(received)
    loss = model(None, positions, mask, labels=torch.roll(tokens, -1, 1)).float().mean()
    loss.backward()
    dist.send(received.grad.contiguous(), 0)
    return loss.item()


def run_pipeline(rank: int, ws: int, root: str) -> dict:
    from megatron.core import dist_checkpointing
    from megatron.core import parallel_state as ps
    from megatron.core.tensor_parallel.random import get_cuda_rng_tracker

    from comet_megatron.megatron import CometMoELayer

    apply_cpu_checkpoint_shims()
    # Megatron's local attention forks the CUDA RNG tracker around its dropout even with dropout 0 (test_spec.py)
    get_cuda_rng_tracker().fork = lambda *args, **kwargs: contextlib.nullcontext()
    ps.initialize_model_parallel(tensor_model_parallel_size=1, pipeline_model_parallel_size=ws)
    config = pipeline_gpt_config(moe_layer_freq=LAYER_FREQ)
    torch.manual_seed(11)
    comet = _build(config, comet=True)
    with torch.no_grad():  # norms start at ones/zeros: make every tensor distinct, so a swapped load shows
        for param in comet.parameters():
            param.normal_(0, 0.2)
    torch.manual_seed(12)
    stock = _build(config, comet=False)
    out = {
        "layers": [
            (layer.layer_number, type(layer.mlp).__name__, isinstance(layer.mlp, CometMoELayer))
            for layer in comet.decoder.layers
        ],
        "stock_layers": [(layer.layer_number, type(layer.mlp).__name__) for layer in stock.decoder.layers],
        "layout_equal": sharded_layout(comet.sharded_state_dict()) == sharded_layout(stock.sharded_state_dict()),
        "layout_keys": [row[1] for row in sharded_layout(comet.sharded_state_dict())],
    }
    directory = os.path.join(root, "comet_pp2")
    if rank == 0:
        os.makedirs(directory)
    torch.distributed.barrier()
    dist_checkpointing.save(comet.sharded_state_dict(), directory)
    before = {n: p.detach().clone() for n, p in stock.named_parameters()}
    stock.load_state_dict(dist_checkpointing.load(stock.sharded_state_dict(), directory, strict="raise_all"))
    comet_params = dict(comet.named_parameters())
    mismatched, unchanged = [], []
    for name, param in stock.named_parameters():
        if not torch.equal(param, comet_counterpart(comet_params, name)):
            mismatched.append(name)
        if torch.equal(param, before[name]):
            unchanged.append(name)
    out.update(mismatched=mismatched, unchanged=unchanged, num_params=len(before))

    torch.manual_seed(3)
    tokens = torch.randint(0, VOCAB, (BATCH, SEQ))
    out["loss_comet"] = _pipeline_step(comet, tokens, rank)
    out["loss_stock"] = _pipeline_step(stock, tokens, rank)
    comet_grads = {name: param.grad for name, param in comet.named_parameters()}
    grad_errors = {}
    for name, param in stock.named_parameters():
        comet_grad = comet_counterpart(comet_grads, name)
        denom = param.grad.norm().item() or 1.0
        grad_errors[name] = (comet_grad - param.grad).norm().item() / denom
    out["grad_errors"] = grad_errors
    ps.destroy_model_parallel()
    return out


@functools.cache
def _results(root: str):
    return run_ranks(2, run_pipeline, root, timeout=600.0)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return _results(str(tmp_path_factory.mktemp("pp_ckpt")))


def test_each_stage_holds_comets_layer_where_megatron_has_its_moe_layer(results):
    expected = {0: [(1, True), (2, False)], 1: [(3, False), (4, True)]}  # (global layer number, Comet MoE layer)
    for rank, r in enumerate(results):
        assert [(n, is_comet) for n, _, is_comet in r["layers"]] == expected[rank]
        for (n, name, _), (stock_n, stock_name) in zip(r["layers"], r["stock_layers"]):
            assert n == stock_n and (name == stock_name or (name, stock_name) == ("CometMoELayer", "MoELayer"))


def test_checkpoint_layout_equals_megatrons_on_every_stage(results):
    for rank, r in enumerate(results):
        assert r["layout_equal"], rank
    moe_layer = {0: "decoder.layers.0.mlp.experts", 1: "decoder.layers.3.mlp.experts"}
    for rank, r in enumerate(results):  # keys carry the global layer index (stage 1's MoE layer is the 4th)
        assert any(k.startswith(moe_layer[rank]) for k in r["layout_keys"]), r["layout_keys"]


def test_comets_pipeline_checkpoint_loads_into_megatron(results):
    for r in results:
        assert r["mismatched"] == [] and r["unchanged"] == [] and r["num_params"] > 5


def test_forward_backward_through_both_stages_equals_megatron(results):
    loss_comet, loss_stock = results[1]["loss_comet"], results[1]["loss_stock"]
    assert abs(loss_comet - loss_stock) <= TOL * abs(loss_stock), (loss_comet, loss_stock)
    for rank, r in enumerate(results):
        assert any("experts" in name for name in r["grad_errors"]), rank
        bad = {k: v for k, v in r["grad_errors"].items() if not v <= TOL}
        assert not bad, (rank, bad)


def test_deferred_weight_gradients_under_megatrons_pipeline_schedule():
    """COMET_WGRAD_DEFER / COMET_WGRAD_CARRY with PP=2: Megatron's 1F1B schedule over three micro-batches, then its
    finalize_model_grads, with the fused backend interpreted (``tests/pipeline_deferred_wgrad.py``). Every variant
    leaves the same main_grad bits on every parameter of both stages as computing the weight gradients in their own
    layer; carried layers are still queued when the schedule finalizes and drained by Megatron's DDP before it
    reduces; the losses do not move."""
    from tests.interpreter import run_interpreted

    reports = run_interpreted("tests.pipeline_deferred_wgrad", timeout=900)
    assert len(reports) == 2
    for rank, r in enumerate(reports):
        assert r["expert_params"] == 4 and r["expert_main_grad_norm"] > 0, (rank, r)
        assert all(r["same_bits_as_no_deferral"].values()), (rank, r)
        # what the DDP drain had to do: a carried depth's layers were still queued (nothing else was)
        assert r["queued_at_finalize"] == {"0": 0, "1": 0, "1c": 1, "2c": 2}, (rank, r)
        assert set(r["queued_after"].values()) == {0}, (rank, r)
    losses = reports[1]["losses"]  # the last stage's
    assert len(losses["0"]) == 3 and all(v == losses["0"] for v in losses.values()), losses
