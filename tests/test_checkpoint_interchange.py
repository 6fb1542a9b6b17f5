"""Dist-checkpoint interchange: Megatron's experts <-> CometGroupedMLP, both ways, and across EP sizes.

On 2 gloo ranks (EP=2) Megatron's own MoE layer (``SequentialMLP`` experts, fp32) is saved with
``megatron.core.dist_checkpointing.save`` (``torch_dist`` format), loaded into a Comet layer, saved
again by Comet and loaded into a fresh Megatron layer: every expert weight and the router weight must
come back bit-exact. Variants: SwiGLU (the default), SwiGLU with ``singleton_local_shards`` metadata
(per-expert keys, supported by 0.16.1's ``SequentialMLP``) and a non-gated GELU MLP. The
``ShardedTensor``/``ShardedObject`` layout Comet emits (keys, global shapes and offsets, fragmentation,
replica ids) must equal Megatron's, e.g. ``decoder.layers.0.mlp.experts.experts.linear_fc1.weight``
(the doubled ``experts`` is Megatron's real key). Resharding: the checkpoints Comet wrote with EP=2
are loaded by Megatron's layer with EP=1 (a separate 1-rank run) and must hold all 8 experts exactly.
Loads use ``strict="raise_all"``, so a missing or unexpected key fails the load.

What Megatron-Core 0.16.1's dist_checkpointing needs on a CPU-only machine
(``tests.megatron_cpu.apply_cpu_checkpoint_shims``, on top of the other CPU shims there):

* ``FileSystemWriterAsync.preload_tensors`` calls ``torch.cuda.synchronize()`` unconditionally, which
  raises without CUDA -> patched to a no-op in the worker processes.
* the writer forks one process per file (``thread_count``, 2 per rank), and each calls
  ``_process_memory()``, which needs ``psutil`` (not a megatron-core dependency). Without psutil the
  forked writer raises before reporting, and ``save`` **hangs forever** in ``count_queue.join()``
  -> ``_process_memory`` is patched to return 0 when psutil is absent (and ``run_ranks`` gets a timeout).
* the checkpoint directory must exist before ``save`` (rank 0 creates it, then a barrier).
gloo itself needs nothing special: the metadata exchange uses ``all_gather_object``/``broadcast_object``.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from tests.checkpoint_layout import comet_counterpart, sharded_layout
from tests.megatron_cpu import apply_cpu_checkpoint_shims, moe_test_config
from tests.multirank import run_ranks

PREFIX = "decoder.layers.0.mlp."
EXPERTS = 8
HIDDEN, FFN = 24, 16
VARIANTS = {
    "swiglu": dict(gated=True, metadata=None),
    "swiglu_singleton": dict(gated=True, metadata={"singleton_local_shards": True}),
    "gelu": dict(gated=False, metadata=None),
}
TIMEOUT = 300.0


def _config(gated: bool, ep: int):
    return moe_test_config(
        hidden_size=HIDDEN,
        ffn_hidden_size=FFN,
        moe_ffn_hidden_size=FFN,
        num_attention_heads=4,
        num_moe_experts=EXPERTS,
        moe_router_topk=2,
        gated_linear_unit=gated,
        activation_func=F.silu if gated else F.gelu,
        expert_model_parallel_size=ep,
        moe_aux_loss_coeff=0.0,
    )


def _build(kind: str, gated: bool, ep: int):
    from megatron.core.models.gpt.moe_module_specs import get_moe_module_spec
    from megatron.core.transformer.spec_utils import build_module

    from comet_megatron.megatron import get_comet_moe_module_spec

    if kind == "megatron":
        spec = get_moe_module_spec(use_te=False, num_experts=EXPERTS, moe_grouped_gemm=False)
    else:
        spec = get_comet_moe_module_spec(use_te=False, num_experts=EXPERTS, backend="reference")
    return build_module(spec, config=_config(gated, ep))


def _expert_weights(layer) -> dict:
    """``{"fc1": [E_local, out, in], "fc2": ..., "router": [E, H]}`` of either layer type (copies)."""
    experts = layer.experts
    if hasattr(experts, "local_experts"):
        fc1 = torch.stack([e.linear_fc1.weight.detach() for e in experts.local_experts])
        fc2 = torch.stack([e.linear_fc2.weight.detach() for e in experts.local_experts])
    else:
        fc1, fc2 = experts.linear_fc1.weight.detach(), experts.linear_fc2.weight.detach()
    return {"fc1": fc1.clone(), "fc2": fc2.clone(), "router": layer.router.weight.detach().clone()}


def _randomize(layer, seed: int, router_seed: int) -> None:
    """Fresh random weights; the router is replicated, so it gets the same values on every rank."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in layer.named_parameters():
            if not name.startswith("router."):
                param.copy_(torch.randn(param.shape, generator=gen))
        router_gen = torch.Generator().manual_seed(router_seed)
        layer.router.weight.copy_(torch.randn(layer.router.weight.shape, generator=router_gen))


def _strip(state: dict) -> dict:
    assert all(k.startswith(PREFIX) for k in state), sorted(state)
    return {k[len(PREFIX) :]: v for k, v in state.items()}


def _save(layer, directory: str, metadata) -> None:
    import torch.distributed as dist
    from megatron.core import dist_checkpointing

    if dist.get_rank() == 0:
        os.makedirs(directory)
    dist.barrier()
    dist_checkpointing.save(layer.sharded_state_dict(prefix=PREFIX, metadata=metadata), directory)


def _load(layer, directory: str, metadata) -> str | None:
    """Load ``directory`` into ``layer``; the error text instead of raising, so that each test names
    the direction that broke (dist_checkpointing raises the same error on every rank)."""
    from megatron.core import dist_checkpointing

    try:
        loaded = dist_checkpointing.load(
            layer.sharded_state_dict(prefix=PREFIX, metadata=metadata), directory, strict="raise_all"
        )
        layer.load_state_dict(_strip(loaded), strict=True)
    except Exception as exc:  # reported by the test that checks this direction
        return f"{type(exc).__name__}: {exc}"[-3000:]
    return None


def run_interchange(rank: int, ws: int, root: str) -> dict:
    """EP=ws: Megatron -> Comet -> Megatron for every variant; checkpoints stay under ``root``."""
    apply_cpu_checkpoint_shims()
    from megatron.core import parallel_state as ps

    ps.initialize_model_parallel(tensor_model_parallel_size=1, expert_model_parallel_size=ws)
    results = {}
    for v, (name, variant) in enumerate(VARIANTS.items()):
        gated, metadata = variant["gated"], variant["metadata"]
        mega = _build("megatron", gated, ws)
        comet = _build("comet", gated, ws)
        _randomize(mega, seed=100 * v + rank, router_seed=100 * v + 50)
        _randomize(comet, seed=100 * v + 10 + rank, router_seed=100 * v + 60)
        original = _expert_weights(mega)
        comet_before = _expert_weights(comet)

        layouts = {
            "megatron": sharded_layout(mega.sharded_state_dict(prefix=PREFIX, metadata=metadata)),
            "comet": sharded_layout(comet.sharded_state_dict(prefix=PREFIX, metadata=metadata)),
        }

        _save(mega, os.path.join(root, name, "megatron_ep2"), metadata)
        to_comet_error = _load(comet, os.path.join(root, name, "megatron_ep2"), metadata)
        in_comet = _expert_weights(comet)

        _save(comet, os.path.join(root, name, "comet_ep2"), metadata)
        fresh = _build("megatron", gated, ws)
        _randomize(fresh, seed=100 * v + 20 + rank, router_seed=100 * v + 70)
        fresh_before = _expert_weights(fresh)
        to_megatron_error = _load(fresh, os.path.join(root, name, "comet_ep2"), metadata)

        results[name] = {
            "to_comet_error": to_comet_error,
            "to_megatron_error": to_megatron_error,
            "original": original,
            "comet_before": comet_before,
            "in_comet": in_comet,
            "fresh_before": fresh_before,
            "round_trip": _expert_weights(fresh),
            "layouts": layouts,
            "comet_state_keys": sorted(comet.sharded_state_dict(prefix=PREFIX, metadata=metadata)),
            "comet_plain_keys": sorted(comet.state_dict()),
        }
    ps.destroy_model_parallel()
    return results


def run_reshard_load(rank: int, ws: int, root: str) -> dict:
    """EP=ws (1): load what Comet wrote with EP=2 into Megatron's layer; return all experts."""
    apply_cpu_checkpoint_shims()
    from megatron.core import parallel_state as ps

    ps.initialize_model_parallel(tensor_model_parallel_size=1, expert_model_parallel_size=ws)
    results = {}
    for v, (name, variant) in enumerate(VARIANTS.items()):
        mega = _build("megatron", variant["gated"], ws)
        _randomize(mega, seed=100 * v + 30, router_seed=100 * v + 80)
        before = _expert_weights(mega)
        error = _load(mega, os.path.join(root, name, "comet_ep2"), variant["metadata"])
        results[name] = {"error": error, "before": before, "loaded": _expert_weights(mega)}
    results["gpt"] = _gpt_model_round_trip(os.path.join(root, "gpt"), ws)
    ps.destroy_model_parallel()
    return results


def _gpt_model_round_trip(directory: str, ws: int) -> dict:
    """A whole GPTModel (examples/spec_swap.py, MoE + dense layer) saved by Comet, loaded by stock Megatron."""

    from megatron.core import dist_checkpointing
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_decoder_block_spec

    from tests.scripts import load_script

    example = load_script("examples/spec_swap.py", "spec_swap_example")

    config = example.make_config(ws, use_cpu_initialization=True)
    torch.manual_seed(5)
    comet = example.build_model(config, backend="reference")
    with torch.no_grad():  # norms start at ones/zeros in both models: make every tensor distinct
        for param in comet.parameters():
            param.normal_()
    torch.manual_seed(6)
    stock = example.GPTModel(
        config=config,
        transformer_layer_spec=get_gpt_decoder_block_spec(config, use_transformer_engine=False),
        vocab_size=example.VOCAB_SIZE,
        max_sequence_length=example.SEQ_LEN,
    )
    os.makedirs(directory)
    dist_checkpointing.save(comet.sharded_state_dict(), directory)
    comet_params = {n: p.detach().clone() for n, p in comet.named_parameters()}
    stock_before = {n: p.detach().clone() for n, p in stock.named_parameters()}
    try:
        loaded = dist_checkpointing.load(stock.sharded_state_dict(), directory, strict="raise_all")
        stock.load_state_dict(loaded, strict=True)
    except Exception as exc:  # reported by the test
        return {"error": f"{type(exc).__name__}: {exc}"[-3000:]}
    mismatched, unchanged = [], []
    for name, param in stock.named_parameters():
        if not torch.equal(param, comet_counterpart(comet_params, name)):
            mismatched.append(name)
        if torch.equal(param, stock_before[name]):
            unchanged.append(name)
    return {
        "error": None,
        "mismatched": mismatched,
        "unchanged": unchanged,
        "num_params": len(stock_before),
        "moe_key_present": "decoder.layers.0.mlp.experts.experts.linear_fc1.weight"
        in {row[1] for row in sharded_layout(comet.sharded_state_dict())},
    }


@pytest.fixture(scope="module")
def ckpt_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("dist_ckpt"))


@pytest.fixture(scope="module")
def ep2(ckpt_root):
    return run_ranks(2, run_interchange, ckpt_root, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def ep1_from_ep2(ckpt_root, ep2):
    return run_ranks(1, run_reshard_load, ckpt_root, timeout=TIMEOUT)[0]


def _assert_equal(a: dict, b: dict, what: str, rank: int | None = None):
    for k in ("fc1", "fc2", "router"):
        assert a[k].shape == b[k].shape, (what, rank, k)
        assert torch.equal(a[k], b[k]), f"{what}: {k} differs on rank {rank} (max {(a[k] - b[k]).abs().max():.3g})"


def _assert_all_differ(a: dict, b: dict, what: str):
    """Negative control: the load must be what made the tensors equal."""
    for k in ("fc1", "fc2", "router"):
        assert not torch.equal(a[k], b[k]), f"{what}: {k} already equal before loading"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_megatron_checkpoint_loads_into_comet(ep2, variant):
    for rank, res in enumerate(ep2):
        r = res[variant]
        assert r["to_comet_error"] is None, f"rank {rank}: {r['to_comet_error']}"
        _assert_all_differ(r["comet_before"], r["original"], "comet before load")
        _assert_equal(r["in_comet"], r["original"], "Megatron -> Comet", rank)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_comet_checkpoint_loads_into_megatron(ep2, variant):
    """Megatron -> Comet -> Megatron returns the original tensors exactly."""
    for rank, res in enumerate(ep2):
        r = res[variant]
        assert r["to_megatron_error"] is None, f"rank {rank}: {r['to_megatron_error']}"
        _assert_all_differ(r["fresh_before"], r["original"], "fresh Megatron layer before load")
        _assert_equal(r["round_trip"], r["original"], "Megatron -> Comet -> Megatron", rank)


def test_ranks_held_different_experts(ep2):
    """EP really sharded the experts (otherwise the EP checks below would prove little)."""
    for variant in VARIANTS:
        assert not torch.equal(ep2[0][variant]["original"]["fc1"], ep2[1][variant]["original"]["fc1"])
        assert torch.equal(ep2[0][variant]["original"]["router"], ep2[1][variant]["original"]["router"])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_sharded_layout_equals_megatron(ep2, variant):
    for rank, res in enumerate(ep2):
        layouts = res[variant]["layouts"]
        assert layouts["comet"] == layouts["megatron"], f"rank {rank}"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_expected_key_names(ep2, variant):
    layout = ep2[0][variant]["layouts"]["comet"]
    tensor_keys = {item[1] for item in layout if item[0] == "tensor"}
    object_keys = {item[1] for item in layout if item[0] == "object"}
    if VARIANTS[variant]["metadata"]:
        experts = ("decoder.layers.0.mlp.experts.experts.0.", "decoder.layers.0.mlp.experts.experts.3.")
        expected_tensors = {f"{e}linear_fc1.weight_{h}" for e in experts for h in "wv"}
        expected_tensors |= {f"{e}linear_fc2.weight" for e in experts}
        assert expected_tensors <= tensor_keys, sorted(tensor_keys)
        assert "decoder.layers.0.mlp.experts.experts.4.linear_fc2.weight" not in tensor_keys  # rank 1's
        assert f"{experts[0]}linear_fc1._extra_state" in object_keys
    else:
        assert tensor_keys == {
            "decoder.layers.0.mlp.router.weight",
            "decoder.layers.0.mlp.experts.experts.linear_fc1.weight",
            "decoder.layers.0.mlp.experts.experts.linear_fc2.weight",
        }
        assert object_keys == {
            "decoder.layers.0.mlp.experts.experts.linear_fc1._extra_state",
            "decoder.layers.0.mlp.experts.experts.linear_fc2._extra_state",
        }
        fc1 = [item for item in layout if item[1].endswith("linear_fc1.weight")]
        rows = 2 * FFN if VARIANTS[variant]["gated"] else FFN
        assert {item[2] for item in fc1} == {(EXPERTS, rows, HIDDEN)}  # global shape: expert axis first
        assert sorted({item[3][0] for item in fc1}) == [0, 1, 2, 3]  # rank 0 holds global experts 0..3


def test_plain_state_dict_is_unchanged(ep2):
    """The dist-ckpt ``_extra_state`` objects do not leak into the ordinary state_dict."""
    for res in ep2:
        assert res["swiglu"]["comet_plain_keys"] == [
            "experts.linear_fc1.weight",
            "experts.linear_fc2.weight",
            "router.weight",
        ]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_comet_ep2_checkpoint_loads_into_megatron_ep1(ep2, ep1_from_ep2, variant):
    """Resharding: 2 ranks x 4 experts written by Comet -> 1 rank x 8 experts read by Megatron."""
    written = {k: torch.cat([ep2[r][variant]["in_comet"][k] for r in range(2)]) for k in ("fc1", "fc2")}
    written["router"] = ep2[0][variant]["in_comet"]["router"]
    assert ep1_from_ep2[variant]["error"] is None, ep1_from_ep2[variant]["error"]
    loaded = ep1_from_ep2[variant]["loaded"]
    assert loaded["fc1"].shape[0] == EXPERTS
    _assert_all_differ(ep1_from_ep2[variant]["before"], written, "EP=1 layer before load")
    _assert_equal(loaded, written, "Comet EP=2 -> Megatron EP=1")


def test_whole_gpt_model_checkpoint_comet_to_megatron(ep1_from_ep2):
    """The spec-swap model's own sharded_state_dict (through TransformerLayer/Block) loads into the
    same GPT built from Megatron's unmodified spec: every parameter, experts included."""
    r = ep1_from_ep2["gpt"]
    assert r["error"] is None, r["error"]
    assert r["moe_key_present"]
    assert r["mismatched"] == []
    assert r["unchanged"] == [] and r["num_params"] > 10
