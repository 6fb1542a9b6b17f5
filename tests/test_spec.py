"""Spec helpers (comet_megatron/megatron/spec.py): building Comet MoE specs and rewriting Megatron's.

In-process tests check the spec objects themselves; one 1-rank gloo run (``_gpt_run``) builds
Megatron's decoder block spec (that needs parallel_state) and the README's spec-swap example
(``examples/spec_swap.py``: a small GPTModel whose MoE layers are Comet's), runs forward + backward on
CPU and compares the loss with the same model built from Megatron's unmodified spec.

CPU shim (on top of ``tests.megatron_cpu``): Megatron's local ``DotProductAttention`` forks the CUDA RNG
tracker around its dropout even with dropout 0; the tracker's ``fork`` becomes a no-op context here.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import math

import pytest
import torch
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.models.gpt.moe_module_specs import get_moe_module_spec
from megatron.core.transformer.mlp import MLP, MLPSubmodules
from megatron.core.transformer.moe.experts import SequentialMLP
from megatron.core.transformer.moe.moe_layer import MoELayer, MoESubmodules
from megatron.core.transformer.moe.router import TopKRouter
from megatron.core.transformer.moe.shared_experts import SharedExpertMLP
from megatron.core.transformer.spec_utils import ModuleSpec

from comet_megatron.errors import CometConfigError
from comet_megatron.megatron import CometGroupedMLP, CometMoELayer, get_comet_moe_module_spec, to_comet_spec
from tests.multirank import run_ranks
from tests.scripts import load_script


def _load_example():
    return load_script("examples/spec_swap.py", "spec_swap_example")


def _spec_equal(a, b) -> bool:
    """Structural equality that also covers ``functools.partial`` (which compares by identity)."""
    if isinstance(a, functools.partial) or isinstance(b, functools.partial):
        return (
            type(a) is type(b)
            and a.func is b.func
            and len(a.args) == len(b.args)
            and all(_spec_equal(x, y) for x, y in zip(a.args, b.args))
            and a.keywords.keys() == b.keywords.keys()
            and all(_spec_equal(a.keywords[k], b.keywords[k]) for k in a.keywords)
        )
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(
            _spec_equal(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
        )
    return a == b


def _without_mlp(layer_spec: ModuleSpec):
    return dataclasses.replace(layer_spec.submodules, mlp=None)


def _assert_comet_moe(spec, megatron_moe_spec, backend: str):
    """``spec`` is Comet's version of ``megatron_moe_spec`` (a ModuleSpec or a 0.19 partial)."""
    assert isinstance(spec, ModuleSpec)
    assert spec.module is CometMoELayer
    assert spec.params == {"backend": backend}
    assert isinstance(spec.submodules, MoESubmodules)
    assert spec.submodules.experts is CometGroupedMLP
    original = getattr(megatron_moe_spec, "submodules", None) or megatron_moe_spec.keywords["submodules"]
    assert _spec_equal(spec.submodules.shared_experts, original.shared_experts)  # Megatron's, unchanged
    assert spec.submodules.router is original.router


# (a) ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grouped_gemm", [False, True])
@pytest.mark.parametrize("backend", ["reference", "auto", "fused"])
def test_get_comet_moe_module_spec(grouped_gemm, backend):
    spec = get_comet_moe_module_spec(use_te=False, num_experts=8, moe_grouped_gemm=grouped_gemm, backend=backend)
    megatron = get_moe_module_spec(use_te=False, num_experts=8, moe_grouped_gemm=grouped_gemm)
    _assert_comet_moe(spec, megatron, backend)
    assert spec.submodules.router is TopKRouter
    assert spec.submodules.shared_experts.module is SharedExpertMLP
    assert spec.metainfo == megatron.metainfo


def test_get_comet_moe_module_spec_default_backend_is_auto():
    assert get_comet_moe_module_spec(use_te=False, num_experts=8).params == {"backend": "auto"}


# (b) ---------------------------------------------------------------------------------------------


def test_to_comet_spec_rewrites_moe_layer_only():
    layer = get_gpt_layer_local_spec(num_experts=8, moe_grouped_gemm=True)
    snapshot = copy.deepcopy(layer)
    assert layer.submodules.mlp.module is MoELayer  # the premise

    rewritten = to_comet_spec(layer, backend="reference")

    assert layer == snapshot, "to_comet_spec modified its input"
    assert layer.submodules.mlp.module is MoELayer
    assert rewritten is not layer and rewritten.submodules is not layer.submodules
    assert rewritten.module is layer.module and rewritten.params == layer.params
    _assert_comet_moe(rewritten.submodules.mlp, layer.submodules.mlp, "reference")
    assert rewritten.submodules.mlp.metainfo == layer.submodules.mlp.metainfo
    assert _without_mlp(rewritten) == _without_mlp(layer)  # attention, norms, bdas: equal
    assert rewritten != layer


def test_to_comet_spec_rewrites_a_bare_moe_spec():
    moe = get_moe_module_spec(use_te=False, num_experts=8, moe_grouped_gemm=False)
    assert moe.submodules.experts.module is SequentialMLP
    _assert_comet_moe(to_comet_spec(moe, backend="reference"), moe, "reference")
    assert moe.submodules.experts.module is SequentialMLP


def test_to_comet_spec_is_idempotent_and_updates_the_backend():
    once = to_comet_spec(get_gpt_layer_local_spec(num_experts=8), backend="reference")
    twice = to_comet_spec(once, backend="auto")
    assert twice.submodules.mlp.module is CometMoELayer
    assert twice.submodules.mlp.params == {"backend": "auto"}
    assert once.submodules.mlp.params == {"backend": "reference"}  # input untouched


# (c) ---------------------------------------------------------------------------------------------


def test_dense_layer_spec_is_unchanged():
    dense = get_gpt_layer_local_spec(num_experts=None)
    assert dense.submodules.mlp.module is MLP
    rewritten = to_comet_spec(dense, backend="reference")
    assert rewritten == dense
    assert rewritten is not dense  # still a copy: callers may modify it freely


# (d) in-process part: a list of layer specs and a block built by hand --------------------------


def test_layer_spec_list_rewrites_only_moe_entries():
    moe = get_gpt_layer_local_spec(num_experts=8)
    dense = get_gpt_layer_local_spec(num_experts=None)
    layers = [moe, dense, moe, dense]  # the same objects repeated, as Megatron's block specs do
    rewritten = to_comet_spec(layers, backend="reference")
    assert isinstance(rewritten, list) and len(rewritten) == 4
    assert [s.submodules.mlp.module for s in rewritten] == [CometMoELayer, MLP, CometMoELayer, MLP]
    assert rewritten[1] == dense and rewritten[3] == dense
    assert moe.submodules.mlp.module is MoELayer


# (e) ---------------------------------------------------------------------------------------------


def _megatron_019_style_moe():
    """What Megatron-Core 0.19's get_moe_module_spec returns, built by hand on 0.16.1."""
    mlp = MLPSubmodules(linear_fc1=ModuleSpec(module=torch.nn.Linear), linear_fc2=ModuleSpec(module=torch.nn.Linear))
    shared = functools.partial(SharedExpertMLP, submodules=mlp)
    experts = functools.partial(SequentialMLP, submodules=mlp)
    return functools.partial(MoELayer, submodules=MoESubmodules(experts=experts, shared_experts=shared))


def test_partial_moe_spec_019_style_is_rewritten():
    moe = _megatron_019_style_moe()
    rewritten = to_comet_spec(moe, backend="reference")
    _assert_comet_moe(rewritten, moe, "reference")
    subs = moe.keywords["submodules"]
    assert not _spec_equal(subs.experts, subs.shared_experts)  # the comparison helper can fail
    assert moe.keywords["submodules"].experts.func is SequentialMLP  # input untouched


def test_partial_layer_spec_with_partial_moe_is_rewritten():
    """A 0.19-style layer: any container whose ``submodules.mlp`` is an MoE partial."""
    layer = get_gpt_layer_local_spec(num_experts=None)
    layer_partial = functools.partial(
        layer.module, submodules=dataclasses.replace(layer.submodules, mlp=_megatron_019_style_moe())
    )
    rewritten = to_comet_spec(layer_partial, backend="auto")
    assert isinstance(rewritten, functools.partial) and rewritten.func is layer.module
    _assert_comet_moe(rewritten.keywords["submodules"].mlp, layer_partial.keywords["submodules"].mlp, "auto")
    assert isinstance(layer_partial.keywords["submodules"].mlp, functools.partial)


def test_partial_of_something_else_is_left_alone():
    dense = functools.partial(MLP, submodules=MLPSubmodules())
    assert to_comet_spec(dense).func is MLP


# (g) ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: to_comet_spec(get_gpt_layer_local_spec(num_experts=8), backend="fast"),
        lambda: get_comet_moe_module_spec(use_te=False, num_experts=8, backend="fast"),
    ],
    ids=["to_comet_spec", "get_comet_moe_module_spec"],
)
def test_unknown_backend_names_the_choices(call):
    with pytest.raises(CometConfigError) as info:
        call()
    message = str(info.value)
    assert "'fast'" in message
    for choice in ("auto", "fused", "reference"):
        assert choice in message


# (d) block spec and (f) end-to-end GPT model, on one gloo rank -----------------------------------


def _describe_block(block) -> list[tuple]:
    return [
        (type(layer.submodules.mlp).__name__, getattr(layer.submodules.mlp, "module", None).__name__)
        for layer in block.layer_specs
    ]


def _gpt_run(rank: int, ws: int) -> dict:
    from megatron.core import parallel_state
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_decoder_block_spec
    from megatron.core.tensor_parallel.random import get_cuda_rng_tracker

    get_cuda_rng_tracker().fork = lambda *args, **kwargs: contextlib.nullcontext()
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=1, expert_model_parallel_size=ws)
    example = _load_example()
    out = {}

    # (d) Megatron's decoder block spec, alternating MoE/dense, as an int period and as a list.
    for name, freq in (("freq_int", 2), ("freq_list", [1, 0, 1, 0])):
        config = example.make_config(ws, num_layers=4, moe_layer_freq=freq, use_cpu_initialization=True)
        block = get_gpt_decoder_block_spec(config, use_transformer_engine=False)
        snapshot = copy.deepcopy(block)
        rewritten = to_comet_spec(block, backend="reference")
        out[name] = {
            "before": _describe_block(block),
            "after": _describe_block(rewritten),
            "input_unchanged": block == snapshot,
            "layer_norm_same": rewritten.layer_norm is block.layer_norm,
            "dense_equal": [rewritten.layer_specs[i] == block.layer_specs[i] for i in (1, 3)],
            "moe_rest_equal": [
                _without_mlp(rewritten.layer_specs[i]) == _without_mlp(block.layer_specs[i]) for i in (0, 2)
            ],
            "moe_experts": [rewritten.layer_specs[i].submodules.mlp.submodules.experts.__name__ for i in (0, 2)],
            "moe_params": [rewritten.layer_specs[i].submodules.mlp.params for i in (0, 2)],
        }

    # (e) the 0.19-style partial builds a working layer on 0.16.1 once rewritten.
    config = example.make_config(ws, num_layers=1, use_cpu_initialization=True)
    moe_spec = to_comet_spec(
        functools.partial(MoELayer, submodules=get_moe_module_spec(use_te=False, num_experts=8).submodules),
        backend="reference",
    )
    layer = moe_spec(config=config)
    y, _ = layer(torch.randn(5, 2, config.hidden_size))
    out["partial_built"] = (type(layer).__name__, type(layer.experts).__name__, tuple(y.shape))

    # (f) the README / examples/spec_swap.py model: 2 layers, MoE then dense, Comet reference backend.
    config = example.make_config(ws, use_cpu_initialization=True, params_dtype=torch.float32)
    torch.manual_seed(0)
    model = example.build_model(config, backend="reference")
    torch.manual_seed(1)
    loss = example.train_step(model)
    out["mlp_types"] = [type(layer.mlp).__name__ for layer in model.decoder.layers]
    out["backend"] = model.decoder.layers[0].mlp.comet_backend.name
    out["loss"] = float(loss)
    out["params_without_grad"] = [n for n, p in model.named_parameters() if p.grad is None]
    out["zero_grads"] = [n for n, p in model.named_parameters() if p.grad is not None and not p.grad.any()]
    out["num_params"] = sum(1 for _ in model.parameters())

    # The example's GPU default: bf16 parameters.
    bf16_config = example.make_config(ws, use_cpu_initialization=True, params_dtype=torch.bfloat16, bf16=True)
    bf16_model = example.build_model(bf16_config, backend="reference")
    out["bf16_loss"] = float(example.train_step(bf16_model))
    out["bf16_dtypes"] = sorted({str(p.dtype) for p in bf16_model.parameters()})

    # The same model from Megatron's unmodified spec, same weights and tokens: same loss.
    stock = example.GPTModel(
        config=config,
        transformer_layer_spec=get_gpt_decoder_block_spec(config, use_transformer_engine=False),
        vocab_size=example.VOCAB_SIZE,
        max_sequence_length=example.SEQ_LEN,
    )
    comet_params = dict(model.named_parameters())
    with torch.no_grad():
        for name, param in stock.named_parameters():
            if ".local_experts." in name:  # ...experts.local_experts.{i}.linear_fc1.weight
                head, tail = name.split(".local_experts.")
                index, rest = tail.split(".", 1)
                param.copy_(comet_params[f"{head}.{rest}"][int(index)])
            else:
                param.copy_(comet_params[name])
    torch.manual_seed(1)
    out["stock_loss"] = float(example.train_step(stock))
    parallel_state.destroy_model_parallel()
    return out


@functools.cache
def _gpt_results() -> dict:
    return run_ranks(1, _gpt_run, timeout=300.0)[0]


@pytest.mark.parametrize("freq", ["freq_int", "freq_list"])
def test_decoder_block_spec_rewrites_only_moe_layers(freq):
    r = _gpt_results()[freq]
    assert r["before"] == [("ModuleSpec", "MoELayer"), ("ModuleSpec", "MLP")] * 2
    assert r["after"] == [("ModuleSpec", "CometMoELayer"), ("ModuleSpec", "MLP")] * 2
    assert r["input_unchanged"]
    assert r["layer_norm_same"]
    assert r["dense_equal"] == [True, True]
    assert r["moe_rest_equal"] == [True, True]
    assert r["moe_experts"] == ["CometGroupedMLP", "CometGroupedMLP"]
    assert r["moe_params"] == [{"backend": "reference"}] * 2


def test_rewritten_partial_spec_builds_on_this_megatron():
    assert _gpt_results()["partial_built"] == ("CometMoELayer", "CometGroupedMLP", (5, 2, 64))


def test_spec_swap_example_trains():
    r = _gpt_results()
    assert r["mlp_types"] == ["CometMoELayer", "MLP"]
    assert r["backend"] == "reference"
    assert math.isfinite(r["loss"]) and r["loss"] > 0
    assert r["num_params"] > 10
    assert r["params_without_grad"] == []
    assert r["zero_grads"] == []


def test_spec_swap_example_runs_in_bf16():
    r = _gpt_results()
    assert r["bf16_dtypes"] == ["torch.bfloat16"]
    assert math.isfinite(r["bf16_loss"]) and r["bf16_loss"] > 0


def test_spec_swap_example_matches_megatron_model():
    r = _gpt_results()
    assert r["stock_loss"] == pytest.approx(r["loss"], rel=1e-6, abs=0)
