"""Training integration on CPU: ``--moe-comet`` parsing and validation (comet_megatron/megatron/args.py), the
pretrain entry point's model building (comet_megatron/megatron/pretrain.py), the Megatron-LM patches and
their helper (comet_megatron/patches.py), and the example launch scripts' command lines.

Two Megatron-Core versions: with 0.16.1 (no ``megatron.training``) the parts that need only
``megatron.core`` run; with the 0.19.2 wheel on ``PYTHONPATH`` the same tests also drive Megatron's own
argument parser, ``gpt_config_from_args`` and ``GPTModelBuilder`` (in spawned processes: Megatron's
arguments are process-global). 0.19.2's ``megatron.training`` imports ``typing.override`` (Python 3.12);
on 3.11 those processes alias it to ``typing_extensions.override`` first (a test-only shim).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import math
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch

from comet_megatron import patches
from comet_megatron.errors import CometConfigError
from comet_megatron.megatron.args import (
    ENV_DEBUG,
    ENV_KERNEL_CONFIG,
    ENV_TUNING_CACHE,
    add_comet_args,
    comet_layer_spec,
    export_comet_env,
    validate_comet_args,
    with_comet_args,
)
from tests.megatron_cpu import moe_test_config
from tests.multirank import run_ranks

ROOT = pathlib.Path(__file__).resolve().parents[1]
HAVE_TRAINING = importlib.util.find_spec("megatron.training") is not None
needs_training = pytest.mark.skipif(
    not HAVE_TRAINING, reason="megatron.training is not importable (megatron-core < 0.19 without Megatron-LM)"
)


def _shim_typing_override() -> None:
    import typing

    if not hasattr(typing, "override"):
        import typing_extensions

        typing.override = typing_extensions.override


# --- flag parsing ----------------------------------------------------------------------------------


def test_add_comet_args_defaults_and_values():
    parser = add_comet_args(argparse.ArgumentParser())
    defaults = parser.parse_args([])
    assert (defaults.moe_comet, defaults.moe_comet_backend, defaults.moe_comet_debug) == (False, "auto", False)
    assert defaults.moe_comet_tuning_cache is None and defaults.moe_comet_kernel_config is None
    args = parser.parse_args(
        [
            "--moe-comet",
            "--moe-comet-backend",
            "reference",
            "--moe-comet-tuning-cache",
            "/tmp/t.json",
            "--moe-comet-kernel-config",
            '{"comm_programs": 24}',
            "--moe-comet-debug",
        ]
    )
    assert args.moe_comet and args.moe_comet_backend == "reference" and args.moe_comet_debug
    assert args.moe_comet_tuning_cache == "/tmp/t.json" and args.moe_comet_kernel_config == '{"comm_programs": 24}'


def test_unknown_backend_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        add_comet_args(argparse.ArgumentParser()).parse_args(["--moe-comet-backend", "fast"])
    assert "auto" in capsys.readouterr().err


def test_with_comet_args_chains_another_provider():
    def other(parser):
        parser.add_argument("--other", type=int, default=3)
        return parser

    args = with_comet_args(other)(argparse.ArgumentParser()).parse_args(["--moe-comet", "--other", "5"])
    assert args.moe_comet and args.other == 5
    assert not with_comet_args(None)(argparse.ArgumentParser()).parse_args([]).moe_comet


def test_tuner_options_set_the_environment(monkeypatch, tmp_path):
    for name in (ENV_TUNING_CACHE, ENV_KERNEL_CONFIG, ENV_DEBUG):
        monkeypatch.setenv(name, "")  # recorded, so that what export_comet_env sets is undone after the test
        monkeypatch.delenv(name)
    args = add_comet_args(argparse.ArgumentParser()).parse_args(
        [
            "--moe-comet",
            "--moe-comet-tuning-cache",
            str(tmp_path / "c.json"),
            "--moe-comet-kernel-config",
            '{"num_stages": 3}',
            "--moe-comet-debug",
        ]
    )
    export_comet_env(args)
    assert os.environ[ENV_TUNING_CACHE] == str(tmp_path / "c.json")
    assert os.environ[ENV_KERNEL_CONFIG] == '{"num_stages": 3}' and os.environ[ENV_DEBUG] == "1"

    from comet_megatron import tuning

    assert tuning.cache_path() == tmp_path / "c.json"  # the variable the tuner reads


def test_wgrad_accumulation_option_sets_what_the_experts_read(monkeypatch, capsys):
    from comet_megatron.megatron.args import ENV_WGRAD_ACCUMULATION
    from comet_megatron.ops.grouped_linear import fuses_into_main_grad, wgrad_accumulation_mode

    monkeypatch.setenv(ENV_WGRAD_ACCUMULATION, "")  # recorded, so that what export_comet_env sets is undone
    monkeypatch.delenv(ENV_WGRAD_ACCUMULATION)
    parser = add_comet_args(argparse.ArgumentParser())
    export_comet_env(parser.parse_args(["--moe-comet"]))
    assert ENV_WGRAD_ACCUMULATION not in os.environ and wgrad_accumulation_mode() == "auto"
    assert fuses_into_main_grad(False)  # Comet adds into main_grad without Megatron's fusion flag
    export_comet_env(parser.parse_args(["--moe-comet", "--moe-comet-wgrad-accumulation", "megatron"]))
    assert wgrad_accumulation_mode() == "megatron"
    assert not fuses_into_main_grad(False) and fuses_into_main_grad(True)
    with pytest.raises(SystemExit):
        parser.parse_args(["--moe-comet-wgrad-accumulation", "fast"])
    assert "per_expert" in capsys.readouterr().err


def test_wgrad_defer_option_sets_what_the_fused_backend_reads(monkeypatch, capsys):
    from comet_megatron.ops.deferred_wgrad import ENV_WGRAD_DEFER, wgrad_defer_depth

    monkeypatch.setenv(ENV_WGRAD_DEFER, "")  # recorded, so that what export_comet_env sets is undone
    monkeypatch.delenv(ENV_WGRAD_DEFER)
    parser = add_comet_args(argparse.ArgumentParser())
    export_comet_env(parser.parse_args(["--moe-comet"]))
    assert ENV_WGRAD_DEFER not in os.environ and wgrad_defer_depth() == 0
    export_comet_env(parser.parse_args(["--moe-comet", "--moe-comet-wgrad-defer", "2"]))
    assert wgrad_defer_depth() == 2
    export_comet_env(parser.parse_args(["--moe-comet", "--moe-comet-wgrad-defer", "0"]))
    assert wgrad_defer_depth() == 0
    from comet_megatron.ops.deferred_wgrad import ENV_WGRAD_CARRY, wgrad_carry

    monkeypatch.setenv(ENV_WGRAD_CARRY, "")
    monkeypatch.delenv(ENV_WGRAD_CARRY)
    export_comet_env(parser.parse_args(["--moe-comet", "--moe-comet-wgrad-defer", "1", "--moe-comet-wgrad-carry"]))
    assert wgrad_defer_depth() == 1 and wgrad_carry()
    with pytest.raises(SystemExit):
        parser.parse_args(["--moe-comet-wgrad-defer", "-1"])
    assert "integer >= 0" in capsys.readouterr().err


# --- startup validation ------------------------------------------------------------------------------


def _args(**overrides) -> SimpleNamespace:
    """What Megatron's parser yields for a supported Comet run (the names of its arguments)."""
    values = dict(
        moe_comet=True,
        moe_comet_backend="reference",
        moe_comet_kernel_config=None,
        num_experts=8,
        expert_model_parallel_size=2,
        expert_tensor_parallel_size=1,
        tensor_model_parallel_size=1,
        moe_token_dispatcher_type="alltoall",
        moe_expert_capacity_factor=None,
        moe_pad_expert_input_to_capacity=False,
        add_bias_linear=False,
        fp8=None,
        fp4=None,
        moe_shared_expert_overlap=False,
        overlap_moe_expert_parallel_comm=False,
        recompute_modules=None,
    )
    values.update(overrides)
    return SimpleNamespace(**values)


BAD_ARGS = {
    "no_experts": (dict(num_experts=None), ["--num-experts"]),
    "flex_dispatcher": (dict(moe_token_dispatcher_type="flex"), ["'flex'", "--moe-token-dispatcher-type alltoall"]),
    "capacity_factor": (dict(moe_expert_capacity_factor=1.0), ["dropless", "unset --moe-expert-capacity-factor"]),
    "pad_to_capacity": (dict(moe_pad_expert_input_to_capacity=True), ["--moe-pad-expert-input-to-capacity"]),
    "expert_tp": (
        dict(expert_tensor_parallel_size=2),
        ["expert tensor parallelism (2)", "--expert-tensor-parallel-size 1"],
    ),
    "expert_tp_from_tp": (
        dict(expert_tensor_parallel_size=None, tensor_model_parallel_size=2),
        ["expert tensor parallelism (2)", "defaults to --tensor-model-parallel-size"],
    ),
    "experts_not_divisible": (
        dict(num_experts=6, expert_model_parallel_size=4),
        ["num_moe_experts=6", "--expert-model-parallel-size"],
    ),
    "bias": (dict(add_bias_linear=True), ["--disable-bias-linear"]),
    "fp8": (dict(fp8="hybrid"), ["fp8/fp4", "--fp8-format"]),
    "shared_expert_overlap": (dict(moe_shared_expert_overlap=True), ["unset --moe-shared-expert-overlap"]),
    "ep_comm_overlap": (dict(overlap_moe_expert_parallel_comm=True), ["--overlap-moe-expert-parallel-comm"]),
    "moe_act_recompute": (
        dict(recompute_modules=["moe_act"]),
        ["--recompute-modules moe_act", "--recompute-modules moe"],
    ),
    "kernel_config": (dict(moe_comet_kernel_config='{"warps": 3}'), ["--moe-comet-kernel-config", "comm_programs"]),
    "backend": (dict(moe_comet_backend="fast"), ["--moe-comet-backend 'fast'", "reference"]),
    "wgrad_carry_without_defer": (dict(moe_comet_wgrad_carry=True), ["--moe-comet-wgrad-carry needs"]),
    "wgrad_carry_with_fsdp": (
        dict(moe_comet_wgrad_carry=True, moe_comet_wgrad_defer=1, use_megatron_fsdp=True),
        ["--moe-comet-wgrad-carry with --use-megatron-fsdp"],
    ),
    "wgrad_defer_with_overlapped_grad_reduce": (
        dict(moe_comet_wgrad_defer=1, overlap_grad_reduce=True),
        ["--moe-comet-wgrad-defer with --overlap-grad-reduce", "unset one of them"],
    ),
}


def test_supported_args_pass():
    validate_comet_args(_args())
    validate_comet_args(_args(moe_token_dispatcher_type="allgather", recompute_modules=["moe", "core_attn"]))
    validate_comet_args(_args(moe_comet_kernel_config='{"comm_programs": 24}'))
    validate_comet_args(_args(moe_comet_wgrad_defer=2, overlap_grad_reduce=False))
    validate_comet_args(_args(moe_comet_wgrad_defer=0, overlap_grad_reduce=True))
    validate_comet_args(_args(moe_comet_wgrad_defer=1, moe_comet_wgrad_carry=True))


def test_wgrad_deferral_from_the_environment_is_checked_too(monkeypatch):
    """COMET_WGRAD_DEFER / COMET_WGRAD_CARRY work without the options: the startup checks read them as well."""
    monkeypatch.setenv("COMET_WGRAD_DEFER", "1")
    with pytest.raises(CometConfigError, match="--moe-comet-wgrad-defer with --overlap-grad-reduce"):
        validate_comet_args(_args(overlap_grad_reduce=True))
    validate_comet_args(_args(moe_comet_wgrad_carry=True))  # the depth comes from the environment
    monkeypatch.setenv("COMET_WGRAD_DEFER", "0")
    monkeypatch.setenv("COMET_WGRAD_CARRY", "1")
    with pytest.raises(CometConfigError, match="--moe-comet-wgrad-carry needs"):
        validate_comet_args(_args())
    monkeypatch.setenv("COMET_WGRAD_CARRY", "maybe")
    with pytest.raises(CometConfigError, match="COMET_WGRAD_CARRY='maybe'"):
        validate_comet_args(_args())


@pytest.mark.parametrize("case", sorted(BAD_ARGS))
def test_unsupported_option_fails_naming_it(case):
    overrides, fragments = BAD_ARGS[case]
    with pytest.raises(CometConfigError) as info:
        validate_comet_args(_args(**overrides))
    message = str(info.value)
    assert message.startswith("--moe-comet cannot run this configuration")
    missing = [f for f in fragments if f not in message]
    assert not missing, f"{missing} not in:\n{message}"


def test_every_problem_is_listed_at_once():
    with pytest.raises(CometConfigError) as info:
        validate_comet_args(_args(add_bias_linear=True, moe_expert_capacity_factor=2.0, expert_tensor_parallel_size=2))
    assert str(info.value).count("\n- ") == 3


def test_without_the_flag_nothing_is_checked_or_rewritten():
    args = _args(moe_comet=False, **BAD_ARGS["bias"][0])
    validate_comet_args(args)
    spec = object()
    assert comet_layer_spec(args, spec) is spec


def test_comet_layer_spec_validates_before_rewriting():
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    with pytest.raises(CometConfigError, match="--disable-bias-linear"):
        comet_layer_spec(_args(add_bias_linear=True), get_gpt_layer_local_spec(num_experts=8))
    rewritten = comet_layer_spec(_args(), get_gpt_layer_local_spec(num_experts=8))
    assert rewritten.submodules.mlp.module.__name__ == "CometMoELayer"
    assert rewritten.submodules.mlp.params == {"backend": "reference"}


# --- the entry point's model building (megatron.core only), one gloo rank ---------------------------------

VOCAB, SEQ = 128, 16


def _model_args(moe_comet: bool) -> SimpleNamespace:
    return _args(
        moe_comet=moe_comet,
        expert_model_parallel_size=1,
        spec=None,
        transformer_impl="local",
        normalization="RMSNorm",
        qk_l2_norm=False,
        vocab_size=VOCAB,
        padded_vocab_size=None,
        make_vocab_size_divisible_by=128,
        max_position_embeddings=SEQ,
        untie_embeddings_and_output_weights=True,
        position_embedding_type="rope",
        rotary_percent=1.0,
        rotary_base=1000000,
        use_rope_scaling=False,
        rotary_seq_len_interpolation_factor=None,
        fp16_lm_cross_entropy=False,
        mtp_num_layers=None,
    )


def _tiny_config():
    """A 4-layer GPT, MoE and dense layers alternating (moe_layer_freq=2), as the args above describe."""
    return moe_test_config(
        num_layers=4,
        hidden_size=32,
        ffn_hidden_size=64,
        num_attention_heads=4,
        num_moe_experts=8,
        moe_router_topk=2,
        moe_ffn_hidden_size=32,
        moe_layer_freq=2,
        moe_router_load_balancing_type="aux_loss",
        moe_aux_loss_coeff=1e-2,
        normalization="RMSNorm",
        hidden_dropout=0.0,
        attention_dropout=0.0,
        apply_rope_fusion=False,
        transformer_impl="local",
    )


def _train_step(model) -> float:
    torch.manual_seed(1)
    tokens = torch.randint(0, VOCAB, (2, SEQ))
    position_ids = torch.arange(SEQ).expand(2, SEQ)
    mask = torch.ones(1, 1, SEQ, SEQ, dtype=torch.bool).triu(1)
    loss = model(tokens, position_ids, mask, labels=torch.roll(tokens, -1, dims=1)).float().mean()
    loss.backward()
    return float(loss)


def _summary(model) -> dict:
    return {
        "mlp_types": [type(layer.mlp).__name__ for layer in model.decoder.layers],
        "backends": [
            layer.mlp.comet_backend.name for layer in model.decoder.layers if hasattr(layer.mlp, "comet_backend")
        ],
        "params_without_grad": [n for n, p in model.named_parameters() if p.grad is None],
        "state_keys": sorted(k for k in model.state_dict() if "experts" in k and "_extra_state" not in k),
    }


def _build_run(rank: int, ws: int) -> dict:
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel.random import get_cuda_rng_tracker

    from comet_megatron.megatron.layer_timing import attach_timers
    from comet_megatron.megatron.pretrain import build_gpt_model

    get_cuda_rng_tracker().fork = lambda *args, **kwargs: contextlib.nullcontext()
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=1, expert_model_parallel_size=ws)
    out = {}
    for name, comet in (("comet", True), ("megatron", False)):
        torch.manual_seed(0)
        model = build_gpt_model(_model_args(comet), config=_tiny_config())
        lines: list[str] = []
        timers = attach_timers(model, report_every=2, printer=lines.append)
        loss = _train_step(model)
        for timer in timers.values():
            timer.flush()
            timer.detach()
        timing = {kind: timer.reports for kind, timer in timers.items()}
        out[name] = {**_summary(model), "loss": loss, "vocab": model.vocab_size, "timing": timing, "lines": lines}
    bias_args = _model_args(True)
    bias_args.add_bias_linear = True
    try:
        build_gpt_model(bias_args, config=_tiny_config())
    except CometConfigError as exc:
        out["bias_error"] = str(exc)
    parallel_state.destroy_model_parallel()
    return out


@pytest.fixture(scope="module")
def built():
    return run_ranks(1, _build_run, timeout=300.0)[0]


def test_build_gpt_model_alternates_comet_and_dense_layers(built):
    r = built["comet"]
    assert r["mlp_types"] == ["CometMoELayer", "MLP", "CometMoELayer", "MLP"]
    assert r["backends"] == ["reference", "reference"]
    assert math.isfinite(r["loss"]) and r["loss"] > 0
    assert r["params_without_grad"] == []
    assert built["megatron"]["mlp_types"] == ["MoELayer", "MLP", "MoELayer", "MLP"]
    assert r["vocab"] == 128


@pytest.mark.parametrize("name", ["comet", "megatron"])
def test_layer_timers_count_every_forward_and_backward(built, name):
    """COMET_LAYER_TIMING's timers: one forward and one backward per MoE layer (2), its router and experts, and
    attention (4) call."""
    timing = built[name]["timing"]
    assert sorted(timing) == ["attention", "experts", "moe", "python", "router"]
    for kind, calls in (("moe", 2), ("router", 2), ("experts", 2), ("attention", 4)):
        sections = [r["sections"] for r in timing[kind]]
        assert sum(s["fwd"]["calls"] for s in sections if "fwd" in s) == calls, kind
        assert sum(s["bwd"]["calls"] for s in sections if "bwd" in s) == calls, kind
        assert all(s["fwd"]["host_ms"] > 0 for s in sections if "fwd" in s)
    assert any(line.startswith("[comet-layer-timing] rank 0 moe: fwd") for line in built[name]["lines"])


def test_layer_timing_interval_is_validated(monkeypatch):
    from comet_megatron.megatron.layer_timing import ENV, report_interval

    monkeypatch.setenv(ENV, "40")
    assert report_interval() == 40
    monkeypatch.setenv(ENV, "yes")
    with pytest.raises(ValueError, match="COMET_LAYER_TIMING"):
        report_interval()


def test_build_gpt_model_rejects_unsupported_options_before_building(built):
    assert "--disable-bias-linear" in built["bias_error"]


# --- Megatron's own parser and GPTModelBuilder (megatron-core >= 0.19) -----------------------------

TRAINING_ARGV = (
    "--transformer-impl local --num-layers 4 --hidden-size 32 --ffn-hidden-size 64 --num-attention-heads 4 "
    "--num-experts 8 --moe-router-topk 2 --moe-ffn-hidden-size 32 --moe-layer-freq 2 "
    "--moe-router-load-balancing-type aux_loss --moe-aux-loss-coeff 1e-2 --moe-token-dispatcher-type alltoall "
    f"--seq-length {SEQ} --max-position-embeddings {SEQ} --position-embedding-type rope --normalization RMSNorm "
    "--swiglu --disable-bias-linear --untie-embeddings-and-output-weights --attention-dropout 0.0 --hidden-dropout 0.0 "
    "--no-masked-softmax-fusion --no-rope-fusion --no-gradient-accumulation-fusion --no-persist-layer-norm "
    "--attention-backend unfused --use-cpu-initialization --micro-batch-size 1 --global-batch-size 2 "
    f"--train-iters 2 --lr 1e-4 --mock-data --tokenizer-type NullTokenizer --vocab-size {VOCAB}"
).split()


def _megatron_parse(argv):
    _shim_typing_override()
    from megatron.training import arguments
    from megatron.training.arguments import parse_and_validate_args

    if not torch.cuda.is_available() and hasattr(arguments, "get_device_arch_version"):
        # validate_args asks the GPU for its architecture when TP > 1; the example scripts target Hopper
        arguments.get_device_arch_version = lambda: 9
    sys.argv = ["pretrain", *argv]
    return parse_and_validate_args(
        extra_args_provider=add_comet_args, args_defaults={"tokenizer_type": "GPT2BPETokenizer"}
    )


def _training_run(rank: int, ws: int, extra: list[str], drop: tuple[str, ...] = ()) -> dict:
    _shim_typing_override()
    from megatron.core import parallel_state
    from megatron.core.process_groups_config import ProcessGroupCollection
    from megatron.core.tensor_parallel.random import get_cuda_rng_tracker
    from megatron.training.argument_utils import gpt_config_from_args
    from megatron.training.models.gpt import GPTModelBuilder, default_layer_spec

    from comet_megatron.megatron.pretrain import CometGPTLayerSpec, megatron_gpt_layer_spec, use_comet_layer_spec

    get_cuda_rng_tracker().fork = lambda *args, **kwargs: contextlib.nullcontext()
    args = _megatron_parse([a for a in TRAINING_ARGV if a not in drop] + extra)
    out = {"moe_comet": args.moe_comet, "backend": args.moe_comet_backend}
    try:
        model_config = use_comet_layer_spec(args, gpt_config_from_args(args))
    except CometConfigError as exc:
        return {**out, "error": str(exc)}
    out["spec_hook"] = type(model_config.transformer_layer_spec).__name__
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=1, expert_model_parallel_size=ws)
    # Comet's base spec is Megatron's default, whichever way it is computed.
    # (0.19 specs hold functools.partial objects, which compare by identity: compare their reprs.)
    megatron_default = default_layer_spec(model_config, None)
    out["same_base_spec"] = repr(megatron_default) == repr(
        megatron_gpt_layer_spec(args, model_config.transformer, None)
    ) and "MoELayer" in repr(megatron_default)
    out["hook_is_comet"] = isinstance(model_config.transformer_layer_spec, CometGPTLayerSpec)
    torch.manual_seed(0)
    model = GPTModelBuilder(model_config).build_model(ProcessGroupCollection.use_mpu_process_groups())
    loss = _train_step(model)
    out.update(_summary(model), loss=loss)
    parallel_state.destroy_model_parallel()
    return out


@needs_training
def test_megatron_parser_and_gpt_model_builder_with_moe_comet():
    r = run_ranks(1, _training_run, ["--moe-comet", "--moe-comet-backend", "reference"], timeout=300.0)[0]
    assert (r["moe_comet"], r["backend"], r["spec_hook"]) == (True, "reference", "CometGPTLayerSpec")
    assert r["same_base_spec"] and r["hook_is_comet"]
    assert r["mlp_types"] == ["CometMoELayer", "MLP", "CometMoELayer", "MLP"]
    assert r["backends"] == ["reference", "reference"]
    assert math.isfinite(r["loss"]) and r["params_without_grad"] == []


@needs_training
def test_megatron_parser_without_the_flag_builds_megatrons_model():
    r = run_ranks(1, _training_run, [], timeout=300.0)[0]
    assert (r["moe_comet"], r["spec_hook"]) == (False, "NoneType")
    assert r["mlp_types"] == ["MoELayer", "MLP", "MoELayer", "MLP"]
    assert math.isfinite(r["loss"])


@needs_training
def test_megatron_parser_unsupported_options_fail_at_startup():
    """Megatron's linear layers have biases unless --disable-bias-linear: leaving it out is an error too."""
    extra = ["--moe-comet", "--moe-expert-capacity-factor", "1.0", "--overlap-grad-reduce", "--moe-comet-wgrad-defer=1"]
    r = run_ranks(1, _training_run, extra, ("--disable-bias-linear",), timeout=300.0)[0]
    assert "error" in r, r
    assert r["error"].startswith("--moe-comet cannot run this configuration")
    assert "--moe-expert-capacity-factor" in r["error"] and "--disable-bias-linear" in r["error"]
    assert "--moe-comet-wgrad-defer with --overlap-grad-reduce" in r["error"]


@needs_training
def test_megatron_parser_cuda_graphs_of_the_moe_preprocess_fail_at_startup():
    """Megatron's local CUDA graphs add moe_preprocess to moe_router: that would capture Comet's dispatch."""
    extra = ["--moe-comet", "--cuda-graph-impl", "local", "--cuda-graph-modules", "attn", "moe_router"]
    r = run_ranks(1, _training_run, extra, timeout=300.0)[0]
    assert "error" in r, r
    assert r["error"].startswith("--moe-comet cannot run this configuration")
    assert "CUDA graphs that capture the MoE preprocess" in r["error"] and "--cuda-graph-modules" in r["error"]


# --- example launch scripts ------------------------------------------------------------------------------

EXAMPLES = ROOT / "examples"
SCRIPTS = [
    "mixtral_8x7b.sh",
    "mixtral_8x7b_2gpu.sh",
    "qwen2_57b_a14b.sh",
    "qwen2_57b_a14b_2gpu.sh",
    "qwen3_30b_a3b.sh",
    "qwen3_30b_a3b_2gpu.sh",
]

FAKE_TORCHRUN = """\
#!/bin/bash
# stand-in for torchrun: checks the launch options, then parses the training arguments with Megatron's parser
nproc=1; nnodes=1; module=
while [ $# -gt 0 ]; do
  case "$1" in
    --nproc-per-node) nproc=$2; shift 2;;
    --nnodes) nnodes=$2; shift 2;;
    --node-rank|--master-addr|--master-port) shift 2;;
    -m) module=$2; shift 2; break;;
    *) echo "unexpected torchrun option $1" >&2; exit 2;;
  esac
done
[ "$module" = comet_megatron.megatron.pretrain ] || { echo "not the entry point: $module" >&2; exit 2; }
echo "NPROC=$nproc NNODES=$nnodes NCCL_NVLS_ENABLE=$NCCL_NVLS_ENABLE"
WORLD_SIZE=$((nproc * nnodes)) RANK=0 exec "$PYTHON" "$CHECKER" "$@"
"""

CHECKER = """\
import sys
from tests.test_training_cli import _megatron_parse, _shim_typing_override
_shim_typing_override()
from megatron.training.argument_utils import gpt_config_from_args
from comet_megatron.megatron.pretrain import use_comet_layer_spec
args = _megatron_parse(sys.argv[1:])
t = use_comet_layer_spec(args, gpt_config_from_args(args)).transformer
print("PARSED", args.moe_comet, t.num_layers, t.num_moe_experts, t.moe_layer_freq, t.expert_model_parallel_size,
      t.recompute_granularity, t.recompute_modules, args.save, args.load, args.save_interval, args.mock_data,
      t.tensor_model_parallel_size, t.sequence_parallel)
"""


@pytest.mark.parametrize("script", [*SCRIPTS, "compare_2gpu.sh"])
def test_example_scripts_are_valid_bash(script):
    assert os.access(EXAMPLES / script, os.X_OK)
    subprocess.run(["bash", "-n", str(EXAMPLES / script)], check=True)


def _run_example(script, tmp_path, **env):
    (tmp_path / "bin").mkdir(exist_ok=True)
    torchrun = tmp_path / "bin" / "torchrun"
    torchrun.write_text(FAKE_TORCHRUN)
    torchrun.chmod(0o755)
    (tmp_path / "check.py").write_text(CHECKER)
    full_env = {
        **os.environ,
        "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
        "PYTHON": sys.executable,
        "CHECKER": str(tmp_path / "check.py"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        **env,
    }
    result = subprocess.run(
        ["bash", str(EXAMPLES / script)], env=full_env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [line for line in result.stdout.splitlines() if line.startswith(("PARSED", "NPROC", "+ torchrun"))]


@needs_training
@pytest.mark.parametrize(
    "script, env, expected",
    [
        ("mixtral_8x7b_2gpu.sh", {}, "PARSED True 4 8 1 2 None ['core_attn'] None None None True 1 False"),
        (
            "mixtral_8x7b_2gpu.sh",
            {
                "COMET": "0",
                "RECOMPUTE": "1",
                "MOE_FREQ": "2",
                "SAVE": "/tmp/ck",
                "LOAD": "/tmp/ck",
                "SAVE_INTERVAL": "50",
            },
            "PARSED False 4 8 2 2 selective ['moe'] /tmp/ck /tmp/ck 50 True 1 False",
        ),
        (
            "qwen2_57b_a14b_2gpu.sh",
            {"RECOMPUTE": "1"},
            "PARSED True 4 64 1 2 selective ['moe'] None None None True 1 False",
        ),
        ("mixtral_8x7b.sh", {}, "PARSED True 32 8 1 8 None ['core_attn'] None None None True 1 False"),
        # attention tensor parallelism: Megatron trains MoE layers with TP > 1 only with sequence parallelism
        ("mixtral_8x7b.sh", {"TP": "2"}, "PARSED True 32 8 1 8 None ['core_attn'] None None None True 2 True"),
        ("qwen2_57b_a14b.sh", {"EP": "2"}, "PARSED True 28 64 1 2 None ['core_attn'] None None None True 1 False"),
        ("qwen3_30b_a3b_2gpu.sh", {}, "PARSED True 4 128 1 2 None ['core_attn'] None None None True 1 False"),
        ("qwen3_30b_a3b.sh", {}, "PARSED True 48 128 1 8 None ['core_attn'] None None None True 1 False"),
    ],
)
def test_example_command_lines_parse_with_megatron(script, env, expected, tmp_path):
    lines = _run_example(script, tmp_path, **env)
    assert expected in lines, lines
    nodes = "NNODES=1" if "2gpu" in script else ("NNODES=2" if "qwen3" in script else "NNODES=4")
    assert any(line.startswith("NPROC=") and nodes in line and "NCCL_NVLS_ENABLE=0" in line for line in lines)


# --- patches for Megatron-LM --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(patches.PATCHES))
def test_patch_files_are_small_and_only_add_comet_lines(name):
    text = patches.patch_path(name).read_text()
    added = [line[1:] for line in text.splitlines() if line.startswith("+") and not line.startswith("+++")]
    removed = [line[1:] for line in text.splitlines() if line.startswith("-") and not line.startswith("---")]
    assert 2 <= len(added) <= 6 and len(removed) == 1
    assert all("comet" in line for line in added), added
    assert "extra_args_provider" in removed[0]
    if shutil.which("git"):  # git parses the patch without a checkout
        stat = subprocess.run(
            ["git", "apply", "--numstat", str(patches.patch_path(name))], capture_output=True, text=True
        )
        assert stat.returncode == 0, stat.stderr
        files = {row.split("\t")[2] for row in stat.stdout.splitlines()}
        assert files == ({"pretrain_gpt.py"} if name == "main" else {"pretrain_gpt.py", "gpt_builders.py"})


def test_patch_dir_holds_the_patches_and_their_readme():
    directory = patches.patch_dir()
    assert {p.name for p in directory.glob("*.patch")} == set(patches.PATCHES.values())
    assert (directory / "README.md").is_file()


def _fake_checkout(root: pathlib.Path, layout: str) -> pathlib.Path:
    root.mkdir(parents=True)
    if layout == "main":
        body = "args = parse_and_validate_args(extra_args_provider=None)\nmodel_cfg = gpt_config_from_args(args)\n"
        body += "full_config = pretrain_cfg_container_from_args(args, model_cfg)\n"
    else:
        body = "pretrain(provider, partial(model_provider, gpt_builder), extra_args_provider=None)\n"
        (root / "gpt_builders.py").write_text("def gpt_builder(args):\n    pass\n")
    (root / "pretrain_gpt.py").write_text(body)
    return root


def test_detect_picks_the_patch_for_the_layout(tmp_path):
    assert patches.detect(_fake_checkout(tmp_path / "new", "main")) == "main"
    assert patches.detect(_fake_checkout(tmp_path / "old", "core_v0.16")) == "core_v0.16"
    with pytest.raises(patches.PatchError, match="no pretrain_gpt.py"):
        patches.detect(tmp_path)
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "pretrain_gpt.py").write_text("print('hello')\n")
    with pytest.raises(patches.PatchError, match="neither supported layout"):
        patches.detect(tmp_path / "odd")


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
@pytest.mark.parametrize("inside_another_repo", [False, True])
def test_apply_check_revert_on_a_fake_checkout(tmp_path, inside_another_repo):
    outer = tmp_path / "outer"
    outer.mkdir()
    if inside_another_repo:  # like .mlm/ inside this repository: the outer repository must be ignored
        subprocess.run(["git", "init", "-q", str(outer)], check=True)
    checkout = _fake_checkout(outer / "mlm", "main")
    patch_dir = tmp_path / "p"
    patch_dir.mkdir()
    (patch_dir / patches.PATCHES["main"]).write_text(
        textwrap.dedent("""\
        diff --git a/pretrain_gpt.py b/pretrain_gpt.py
        --- a/pretrain_gpt.py
        +++ b/pretrain_gpt.py
        @@ -1,3 +1,4 @@
         args = parse_and_validate_args(extra_args_provider=None)
         model_cfg = gpt_config_from_args(args)
        +model_cfg = use_comet_layer_spec(args, model_cfg)  # comet-megatron
         full_config = pretrain_cfg_container_from_args(args, model_cfg)
        """)
    )
    assert "applies" in patches.check(checkout, patch_dir)
    assert patches.apply(checkout, patch_dir).startswith("applied")
    assert "use_comet_layer_spec" in (checkout / "pretrain_gpt.py").read_text()
    assert "already applied" in patches.check(checkout, patch_dir)
    assert "already applied" in patches.apply(checkout, patch_dir)
    assert patches.revert(checkout, patch_dir).startswith("reverted")
    assert "comet" not in (checkout / "pretrain_gpt.py").read_text()
    (checkout / "pretrain_gpt.py").write_text((checkout / "pretrain_gpt.py").read_text().replace("model_cfg =", "x ="))
    with pytest.raises(patches.PatchError, match="does not apply"):
        patches.check(checkout, patch_dir)


def test_patches_cli(tmp_path, capsys):
    assert patches.main(["list"]) == 0
    assert "megatron-lm-main.patch" in capsys.readouterr().out
    assert patches.main(["which", str(_fake_checkout(tmp_path / "old", "core_v0.16"))]) == 0
    assert capsys.readouterr().out.strip().endswith("megatron-lm-core_v0.16.patch")
    assert patches.main(["check", str(tmp_path)]) == 1
    assert "no pretrain_gpt.py" in capsys.readouterr().err


def test_entry_point_without_megatron_training_says_what_to_install(monkeypatch):
    if HAVE_TRAINING:
        pytest.skip("megatron.training is importable here")
    from comet_megatron.megatron import pretrain

    with pytest.raises(SystemExit, match="megatron-core>=0.19"):
        pretrain.main(["--moe-comet"])


def test_console_script_is_declared():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'comet-megatron-pretrain = "comet_megatron.megatron.pretrain:main"' in text


def test_prebuilt_dataset_helpers_skip_megatrons_make(monkeypatch, tmp_path):
    """The wheels ship helpers_cpp built but no Makefile; megatron.training would run make and exit."""
    import types

    from megatron.core.datasets import utils

    from comet_megatron.megatron.pretrain import use_prebuilt_dataset_helpers

    def compile_with_make():
        raise AssertionError("make would run")

    monkeypatch.setattr(utils, "compile_helpers", compile_with_make)
    monkeypatch.setitem(sys.modules, "megatron.core.datasets.helpers_cpp", types.ModuleType("helpers_cpp"))
    monkeypatch.setattr(utils, "__file__", str(tmp_path / "utils.py"))
    assert use_prebuilt_dataset_helpers()
    utils.compile_helpers()  # now a no-op

    monkeypatch.setattr(utils, "compile_helpers", compile_with_make)
    (tmp_path / "Makefile").write_text("all:\n")
    assert not use_prebuilt_dataset_helpers()  # a source checkout builds its own
    assert utils.compile_helpers is compile_with_make

    (tmp_path / "Makefile").unlink()
    monkeypatch.setitem(sys.modules, "megatron.core.datasets.helpers_cpp", None)  # import fails
    assert not use_prebuilt_dataset_helpers()
    assert utils.compile_helpers is compile_with_make


def test_layer_timing_log_summary(tmp_path, capsys):
    from comet_megatron.megatron.layer_timing import main, summarize_log

    log = tmp_path / "train.log"
    rows = [
        "[comet-layer-timing] rank 0 moe: fwd gpu 9.000 host 1.000 ms (16 calls) | bwd gpu 9.000 host 1.000 ms "
        "(16 calls) | alloc retries 0 reserved 70.00 GiB",
        " [comet-layer-timing] rank 0 moe: fwd gpu   2.000 host   1.000 ms (16 calls) | bwd gpu   6.000 host   "
        "0.500 ms (12 calls)",
        "iteration 3 | lm loss 10.1",
        "[comet-layer-timing] rank 0 moe: fwd gpu   4.000 host   3.000 ms (48 calls)",
        "[comet-layer-timing] rank 1 attention: fwd gpu   nan host   3.000 ms (4 calls)",
        "[comet-layer-timing] rank 1 fused: fwd.plan gpu 1.000 host 2.000 ms (4 calls) | rows 8000.0 | alloc retries 0",
        "[comet-layer-timing] rank 1 fused: bwd.dispatch_dgrad gpu 3.000 host 0.100 ms (4 calls, host max 0.400) "
        "| rows 9000.0",
        "[comet-layer-timing] rank 1 python: gc.gen0 gpu nan host 0.300 cpu 0.100 ms (2 calls, host max 0.400)",
        "[comet-layer-timing] rank 1 python: gc.gen0 gpu nan host 0.600 cpu 0.400 ms (2 calls, host max 0.700)",
    ]
    log.write_text("\n".join(rows) + "\n")
    summary = summarize_log(str(log), skip_reports=1)
    # (reports without a "host max" read 0 there)
    assert summary["moe"][0]["fwd"] == {"gpu_ms": 3.5, "host_ms": 2.5, "calls": 64, "host_max_ms": 0.0}
    assert summary["moe"][0]["bwd"] == {"gpu_ms": 6.0, "host_ms": 0.5, "calls": 12, "host_max_ms": 0.0}
    assert "attention" not in summary  # its only report is warm-up
    assert summary["fused"][1] == {
        "bwd.dispatch_dgrad": {"gpu_ms": 3.0, "host_ms": 0.1, "calls": 4, "host_max_ms": 0.4},
        "rows": {"value": 9000.0},
    }
    assert summary["python"][1]["gc.gen0"] == pytest.approx(
        {"gpu_ms": float("nan"), "host_ms": 0.6, "calls": 2, "host_max_ms": 0.7, "cpu_ms": 0.4}, nan_ok=True
    )
    # a window: rank 0's moe reports 1-2 only (the third, 48 calls at 4.0 ms, is after it)
    window = summarize_log(str(log), skip_reports=0, last_report=2)
    assert window["moe"][0]["fwd"]["calls"] == 32 and window["moe"][0]["fwd"]["gpu_ms"] == 5.5
    with pytest.raises(ValueError, match="--last-report 2 must be above --skip-reports 2"):
        summarize_log(str(log), skip_reports=2, last_report=2)
    main([str(log), "--skip-reports", "0", "--json", str(tmp_path / "s.json")])
    out = capsys.readouterr().out
    assert "attention" in out and "fwd.plan" in out
    with pytest.raises(SystemExit):
        main([str(log), "--skip-reports", "3", "--last-report", "1"])
    assert "--last-report 1 must be above" in capsys.readouterr().err
