"""Configurations Comet cannot run fail at construction with a CometConfigError that names the option
and what to set; ``backend="auto"`` falls back to the reference backend with one warning.

Two kinds of tests:

* ``validate_moe_config`` directly, in-process, with a fake process-group collection (objects with
  ``size()``/``rank()``). ``megatron.core.utils.get_pg_size(group)`` returns 1 whenever
  ``torch.distributed`` is not initialized (or the group is None), whatever the group says, so these
  tests patch ``torch.distributed.is_initialized`` to True.
* real layer construction (``build_module`` of Comet's spec) on 2 gloo ranks with EP=2 (and EP=1 x
  expert-TP=2 for the expert-tensor-parallel check), run once; each case records the error it got.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import pytest
import torch

from comet_megatron.errors import CometConfigError
from comet_megatron.megatron.validation import validate_moe_config
from tests.megatron_cpu import moe_test_config
from tests.multirank import run_ranks


def _config(**overrides):
    fields = dict(
        hidden_size=16,
        ffn_hidden_size=8,
        moe_ffn_hidden_size=8,
        num_attention_heads=2,
        num_moe_experts=4,
        moe_router_topk=2,
    )
    fields.update(overrides)
    return moe_test_config(**fields)


# What each bad option must produce: (config overrides, fragments the message must contain).
BAD_OPTIONS = {
    "capacity_factor": (
        dict(moe_expert_capacity_factor=1.5),
        ["moe_expert_capacity_factor=1.5", "dropless", "unset --moe-expert-capacity-factor"],
    ),
    "bias": (dict(add_bias_linear=True), ["add_bias_linear=False", "--disable-bias-linear"]),
    "shared_expert_overlap": (
        dict(moe_shared_expert_intermediate_size=8, moe_shared_expert_overlap=True),
        ["moe_shared_expert_overlap", "unset --moe-shared-expert-overlap"],
    ),
    "flex_dispatcher": (
        dict(moe_token_dispatcher_type="flex"),
        ["moe_token_dispatcher_type='flex'", "--moe-token-dispatcher-type alltoall"],
    ),
}
EXPERTS_NOT_DIVISIBLE = ["num_moe_experts=3", "expert-parallel size 2", "--expert-model-parallel-size"]
EXPERT_TP = ["expert tensor parallelism (2)", "expert_tensor_parallel_size=1", "--expert-tensor-parallel-size 1"]


# validate_moe_config directly ---------------------------------------------------------------------


@dataclass
class FakeGroup:
    world: int
    me: int = 0

    def size(self) -> int:
        return self.world

    def rank(self) -> int:
        return self.me


@dataclass
class FakeProcessGroups:
    ep: FakeGroup
    expt_tp: FakeGroup


@pytest.fixture
def dist_initialized(monkeypatch):
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)


def _fake_groups(ep: int = 2, expt_tp: int = 1) -> FakeProcessGroups:
    return FakeProcessGroups(ep=FakeGroup(ep, 1), expt_tp=FakeGroup(expt_tp))


def _message(config, groups) -> str:
    with pytest.raises(CometConfigError) as info:
        validate_moe_config(config, groups)
    return str(info.value)


def _assert_fragments(message: str, fragments: list[str]):
    missing = [f for f in fragments if f not in message]
    assert not missing, f"{missing} not in:\n{message}"


def test_bad_weight_gradient_environment_fails_at_construction(dist_initialized, monkeypatch):
    monkeypatch.setenv("COMET_WGRAD_STREAMS", "0")
    _assert_fragments(_message(_config(), _fake_groups(ep=2)), ["COMET_WGRAD_STREAMS='0'", "from 1 to 8"])
    monkeypatch.setenv("COMET_WGRAD_STREAMS", " 2 ")  # surrounding spaces are fine
    validate_moe_config(_config(), _fake_groups(ep=2))


def test_supported_config_passes(dist_initialized):
    validate_moe_config(_config(), _fake_groups(ep=2))
    validate_moe_config(_config(moe_token_dispatcher_type="allgather", num_moe_experts=8), _fake_groups(ep=4))


def test_get_pg_size_ignores_groups_without_distributed():
    """Why the fixture above exists: without an initialized process group every group counts as 1."""
    from megatron.core.utils import get_pg_size

    assert not torch.distributed.is_initialized()
    assert get_pg_size(FakeGroup(2)) == 1
    validate_moe_config(_config(num_moe_experts=3), _fake_groups(ep=2))  # not caught: EP "is" 1


def test_get_pg_size_reads_the_group_when_initialized(dist_initialized):
    from megatron.core.utils import get_pg_size

    assert get_pg_size(FakeGroup(2)) == 2 and get_pg_size(None) == 1


def test_experts_not_divisible_by_ep(dist_initialized):
    _assert_fragments(_message(_config(num_moe_experts=3), _fake_groups(ep=2)), EXPERTS_NOT_DIVISIBLE)


def test_expert_tensor_parallel(dist_initialized):
    _assert_fragments(_message(_config(), _fake_groups(ep=2, expt_tp=2)), EXPERT_TP)


@pytest.mark.parametrize("name", list(BAD_OPTIONS))
def test_bad_option(dist_initialized, name):
    overrides, fragments = BAD_OPTIONS[name]
    message = _message(_config(**overrides), _fake_groups(ep=2))
    _assert_fragments(message, fragments)
    assert message.count("\n- ") == 1, message  # exactly this one problem


@pytest.mark.parametrize("option", ["overlap_dispatch_backward_with_experts_wgrad", "delay_wgrad_compute"])
def test_deferred_weight_gradients_are_refused(dist_initialized, option):
    config = _config()  # set afterwards: TransformerConfig asserts Transformer Engine / EP-overlap for these
    setattr(config, option, True)
    message = _message(config, _fake_groups(ep=2))
    _assert_fragments(message, [option, f"unset --{option.replace('_', '-')}"])
    assert message.count("\n- ") == 1, message


def test_all_problems_in_one_message(dist_initialized):
    overrides = {k: v for opts, _ in BAD_OPTIONS.values() for k, v in opts.items()}
    overrides.pop("moe_token_dispatcher_type")  # moe_shared_expert_overlap needs alltoall in the config
    config = _config(num_moe_experts=3, **overrides)
    config.moe_token_dispatcher_type = "flex"
    message = _message(config, _fake_groups(ep=2, expt_tp=2))
    _assert_fragments(message, EXPERTS_NOT_DIVISIBLE + EXPERT_TP)
    for _, fragments in BAD_OPTIONS.values():
        _assert_fragments(message, fragments)
    assert message.count("\n- ") == len(BAD_OPTIONS) + 2, message


# construction on real process groups --------------------------------------------------------------


def _build(config, backend: str = "reference"):
    from megatron.core.transformer.spec_utils import build_module

    from comet_megatron.megatron import get_comet_moe_module_spec

    spec = get_comet_moe_module_spec(use_te=False, num_experts=config.num_moe_experts, backend=backend)
    return build_module(spec, config=config)


def _attempt(fn) -> dict:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            layer = fn()
        except Exception as exc:  # recorded for the test that expects it
            return {"error": type(exc).__name__, "message": str(exc), "warnings": [str(w.message) for w in caught]}
    return {
        "error": None,
        "backend": layer.comet_backend.name,
        "layer": type(layer).__name__,
        "warnings": [str(w.message) for w in caught if "comet" in str(w.message)],
    }


def _construction_run(rank: int, ws: int) -> dict:
    from megatron.core import parallel_state as ps

    from comet_megatron.backends.selection import fused_unavailable_reason

    ps.initialize_model_parallel(tensor_model_parallel_size=1, expert_model_parallel_size=ws)
    ep = dict(expert_model_parallel_size=ws)
    out = {"ok": _attempt(lambda: _build(_config(**ep)))}
    out["experts_not_divisible"] = _attempt(lambda: _build(_config(num_moe_experts=3, **ep)))
    for name, (overrides, _) in BAD_OPTIONS.items():
        out[name] = _attempt(lambda overrides=overrides: _build(_config(**overrides, **ep)))
    out["unknown_backend"] = _attempt(lambda: _layer_with_backend(_config(**ep), "turbo"))
    out["fused_reason"] = fused_unavailable_reason(_config(**ep))
    out["fused"] = _attempt(lambda: _build(_config(**ep), backend="fused"))
    out["auto_first"] = _attempt(lambda: _build(_config(**ep), backend="auto"))
    out["auto_second"] = _attempt(lambda: _build(_config(**ep), backend="auto"))
    ps.destroy_model_parallel()

    ps.initialize_model_parallel(
        tensor_model_parallel_size=1, expert_model_parallel_size=1, expert_tensor_parallel_size=ws
    )
    out["expert_tp"] = _attempt(lambda: _build(_config(expert_tensor_parallel_size=ws)))
    ps.destroy_model_parallel()
    return out


def _layer_with_backend(config, backend: str):
    """CometMoELayer with an arbitrary backend string (bypassing the spec helper's own check)."""
    from megatron.core.models.gpt.moe_module_specs import get_moe_module_spec
    from megatron.core.transformer.spec_utils import ModuleSpec, build_module

    from comet_megatron.megatron import CometMoELayer

    subs = get_moe_module_spec(use_te=False, num_experts=config.num_moe_experts).submodules
    return build_module(ModuleSpec(module=CometMoELayer, submodules=subs, params={"backend": backend}), config=config)


@functools.cache
def _constructed() -> list[dict]:
    return run_ranks(2, _construction_run, timeout=300.0)


def _each_rank(case: str):
    results = _constructed()
    assert len(results) == 2
    return [r[case] for r in results]


def test_construction_of_a_supported_config_succeeds():
    for r in _each_rank("ok"):
        assert r["error"] is None and r["layer"] == "CometMoELayer" and r["backend"] == "reference"


def test_construction_experts_not_divisible_by_ep():
    for r in _each_rank("experts_not_divisible"):
        assert r["error"] == "CometConfigError", r
        _assert_fragments(r["message"], EXPERTS_NOT_DIVISIBLE)


def test_construction_expert_tensor_parallel():
    for r in _each_rank("expert_tp"):
        assert r["error"] == "CometConfigError", r
        _assert_fragments(r["message"], EXPERT_TP)


@pytest.mark.parametrize("name", list(BAD_OPTIONS))
def test_construction_bad_option(name):
    for r in _each_rank(name):
        assert r["error"] == "CometConfigError", r
        _assert_fragments(r["message"], BAD_OPTIONS[name][1])


def test_construction_unknown_backend():
    for r in _each_rank("unknown_backend"):
        assert r["error"] == "CometConfigError", r
        _assert_fragments(r["message"], ["'turbo'", "auto", "fused", "reference"])


def test_fused_backend_on_cpu_explains_and_suggests():
    reason = _each_rank("fused_reason")[0]
    assert reason, "the fused backend claims it can run on a CPU-only machine"
    for r in _each_rank("fused"):
        assert r["error"] == "CometConfigError", r
        _assert_fragments(r["message"], ["'fused'", "cannot run here", reason, "backend='reference'", "'auto'"])


def test_auto_backend_on_cpu_warns_once_and_uses_reference():
    reason = _each_rank("fused_reason")[0]
    for first, second in zip(_each_rank("auto_first"), _each_rank("auto_second")):
        assert first["error"] is None and second["error"] is None, (first, second)
        assert first["backend"] == second["backend"] == "reference"
        assert len(first["warnings"]) == 1, first["warnings"]
        _assert_fragments(first["warnings"][0], ["'auto'", "'reference'", reason])
        assert second["warnings"] == [], "the same reason was warned about twice"


# CUDA graphs: attention and Megatron's router may be captured, Comet's dispatch may not -------------------


def _graph_config(impl: str, modules=None, **fields):
    """``modules`` under the installed Megatron-Core's name: cuda_graph_modules (>= 0.19) or cuda_graph_scope."""
    key = "cuda_graph_modules" if "cuda_graph_modules" in _config().__dataclass_fields__ else "cuda_graph_scope"
    if impl != "none":
        fields["cuda_graph_impl"] = impl
    if modules is not None:
        fields[key] = modules
    return _config(**fields)


GRAPH_ALLOWED = {
    "none": ("none", None),
    "attention_local": ("local", ["attn"]),
    "attention_and_router_te": ("transformer_engine", ["attn", "moe_router"]),
}
GRAPH_REFUSED = {  # (impl, modules, fragments of the message)
    "router_local_adds_preprocess": ("local", ["attn", "moe_router"], ["local implementation adds to moe_router"]),
    "preprocess_te": ("transformer_engine", ["attn", "moe_router", "moe_preprocess"], ["the MoE preprocess"]),
    "whole_layer": ("transformer_engine", [], ["whole transformer layers", "<whole layer>"]),
    "whole_layer_full": ("transformer_engine", "full", ["whole transformer layers"]),
}


@pytest.mark.parametrize("name", list(GRAPH_ALLOWED))
def test_cuda_graphs_of_attention_and_router_pass(dist_initialized, name):
    impl, modules = GRAPH_ALLOWED[name]
    validate_moe_config(_graph_config(impl, modules), _fake_groups(ep=2))


@pytest.mark.parametrize("name", list(GRAPH_REFUSED))
def test_cuda_graphs_of_comets_dispatch_fail_at_construction(dist_initialized, name):
    impl, modules, fragments = GRAPH_REFUSED[name]
    message = _message(_graph_config(impl, modules), _fake_groups(ep=2))
    option = "--cuda-graph-modules" if "cuda_graph_modules" in _config().__dataclass_fields__ else "--cuda-graph-scope"
    _assert_fragments(
        message,
        [*fragments, f"--cuda-graph-impl {impl}", f"--cuda-graph-impl transformer_engine {option} attn moe_router"],
    )
    assert message.count("\n- ") == 1, message


def test_whole_iteration_and_deprecated_cuda_graph_flags_fail(dist_initialized):
    if "cuda_graph_modules" in _config().__dataclass_fields__:  # >= 0.19: an implementation of its own
        whole_iteration = _graph_config("full_iteration")
    else:  # 0.16: a scope of the local implementation
        whole_iteration = _graph_config("local", ["full_iteration"])
    _assert_fragments(_message(whole_iteration, _fake_groups(ep=2)), ["the whole training iteration"])
    _assert_fragments(
        _message(_config(enable_cuda_graph=True), _fake_groups(ep=2)),
        ["whole transformer layers", "--cuda-graph-impl local"],
    )
