"""A distributed-optimizer resume across expert layouts (Megatron's experts <-> --moe-comet) in a bucket-space
format is refused at startup with the options that make it safe; every safe combination passes.

The checkpoints are real Megatron-Core distributed checkpoints (torch_dist, written on one gloo rank) with the
common state Megatron's training loop stores: the saving run's ``args`` and the content metadata that holds
the distributed optimizer's sharding type.
"""

from __future__ import annotations

import argparse
import os

import pytest

from comet_megatron.errors import CometConfigError
from comet_megatron.megatron.args import comet_layer_spec
from comet_megatron.megatron.checkpoint_guard import check_resume_across_expert_layouts, checkpoint_dir
from tests.multirank import run_ranks


def _save_checkpoints(rank, ws, root):
    import torch
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing import ShardedTensor

    from tests.megatron_cpu import apply_cpu_checkpoint_shims

    apply_cpu_checkpoint_shims()
    written = {}
    for comet in (False, True):
        for sharding in ("dp_reshardable", "fully_reshardable", None):
            for iteration, no_save_optim in ((10, False), (20, True)):
                name = f"{'comet' if comet else 'megatron'}_{sharding}"
                path = os.path.join(root, name, f"iter_{iteration:07d}")
                os.makedirs(path, exist_ok=True)
                state = {
                    "weight": ShardedTensor.from_rank_offsets("decoder.weight", torch.arange(6.0).view(2, 3)),
                    "args": argparse.Namespace(moe_comet=comet, no_save_optim=no_save_optim, num_experts=8),
                    "iteration": iteration,
                }
                metadata = None if sharding is None else {"distrib_optim_sharding_type": sharding}
                dist_checkpointing.save(state, path, content_metadata=metadata)
                if not no_save_optim:  # the latest checkpoint has optimizer state; --ckpt-step 20 has none
                    with open(os.path.join(root, name, "latest_checkpointed_iteration.txt"), "w") as f:
                        f.write(str(iteration))
                written[name] = os.path.join(root, name)
    # Megatron's-layout checkpoints it would not take optimizer state from: a release checkpoint, and one
    # saved by the regular (non-distributed) optimizer, whose state is stored per parameter in model space
    for name, dirname, use_dist_opt in (("release", "release", True), ("regular_optimizer", "iter_0000010", False)):
        path = os.path.join(root, name, dirname)
        os.makedirs(path, exist_ok=True)
        state = {
            "weight": ShardedTensor.from_rank_offsets("decoder.weight", torch.arange(6.0).view(2, 3)),
            "args": argparse.Namespace(moe_comet=False, use_distributed_optimizer=use_dist_opt, num_experts=8),
        }
        dist_checkpointing.save(state, path, content_metadata=None)
        with open(os.path.join(root, name, "latest_checkpointed_iteration.txt"), "w") as f:
            f.write("release" if dirname == "release" else "10")
        written[name] = os.path.join(root, name)
    return written


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("ckpts"))
    return run_ranks(1, _save_checkpoints, root)[0]


def _args(load, comet, **kw):
    values = dict(load=load, moe_comet=comet, num_experts=8, use_distributed_optimizer=True)
    values.update(kw)
    return argparse.Namespace(**values)


@pytest.mark.parametrize("saved_comet", [False, True], ids=["saved_by_megatron", "saved_by_comet"])
@pytest.mark.parametrize("sharding", ["dp_reshardable", None], ids=["dp_reshardable", "pre_0.13"])
def test_bucket_space_state_across_layouts_is_refused(checkpoints, saved_comet, sharding):
    load = checkpoints[f"{'comet' if saved_comet else 'megatron'}_{sharding}"]
    with pytest.raises(CometConfigError, match="--dist-ckpt-optim-fully-reshardable.*--no-load-optim") as info:
        check_resume_across_expert_layouts(_args(load, comet=not saved_comet))
    assert "iter_0000010" in str(info.value)
    # the same checkpoint under the layout that wrote it, or without its optimizer state, is fine
    check_resume_across_expert_layouts(_args(load, comet=saved_comet))
    check_resume_across_expert_layouts(_args(load, comet=not saved_comet, no_load_optim=True))
    check_resume_across_expert_layouts(_args(load, comet=not saved_comet, finetune=True))
    check_resume_across_expert_layouts(_args(load, comet=not saved_comet, use_distributed_optimizer=False))
    # --ckpt-step picks the iteration: the one saved without optimizer state is fine
    check_resume_across_expert_layouts(_args(load, comet=not saved_comet, ckpt_step=20))


@pytest.mark.parametrize("saved_comet", [False, True])
def test_model_space_state_crosses_layouts(checkpoints, saved_comet):
    load = checkpoints[f"{'comet' if saved_comet else 'megatron'}_fully_reshardable"]
    check_resume_across_expert_layouts(_args(load, comet=not saved_comet))


def test_nothing_to_load_passes(tmp_path):
    check_resume_across_expert_layouts(_args(str(tmp_path), comet=True))  # no tracker file: a fresh start
    check_resume_across_expert_layouts(_args(None, comet=True))
    assert checkpoint_dir(str(tmp_path)) is None
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("release")
    assert checkpoint_dir(str(tmp_path)) == os.path.join(str(tmp_path), "release")


@pytest.mark.parametrize("name", ["release", "regular_optimizer"])
def test_checkpoints_without_distributed_optimizer_state_to_load_pass(checkpoints, name):
    check_resume_across_expert_layouts(_args(checkpoints[name], comet=True))


def test_the_entry_points_config_hook_runs_the_check(checkpoints):
    from comet_megatron.megatron.pretrain import use_comet_layer_spec

    config = argparse.Namespace(transformer_layer_spec=None)  # a GPTModelConfig stand-in
    with pytest.raises(CometConfigError, match="saved with Megatron's MoE experts"):
        use_comet_layer_spec(_args(checkpoints["megatron_dp_reshardable"], comet=True), config)
    with pytest.raises(CometConfigError, match="saved with --moe-comet"):
        use_comet_layer_spec(_args(checkpoints["comet_dp_reshardable"], comet=False), config)
    weights_only = _args(checkpoints["comet_dp_reshardable"], comet=False, no_load_optim=True)
    assert use_comet_layer_spec(weights_only, config) is config


def test_a_megatron_api_error_is_not_swallowed(checkpoints, monkeypatch):
    from megatron.core import dist_checkpointing

    def broken(*args, **kwargs):
        raise AttributeError("an API that moved")

    monkeypatch.setattr(dist_checkpointing, "load_common_state_dict", broken)
    with pytest.raises(AttributeError, match="moved"):
        check_resume_across_expert_layouts(_args(checkpoints["megatron_dp_reshardable"], comet=True))


def test_the_spec_hook_runs_the_check_with_and_without_the_flag(checkpoints):
    load = checkpoints["comet_dp_reshardable"]
    base = object()
    with pytest.raises(CometConfigError, match="saved with --moe-comet"):
        comet_layer_spec(_args(load, comet=False), base)  # a Megatron run resuming Comet's checkpoint
    assert comet_layer_spec(_args(checkpoints["megatron_dp_reshardable"], comet=False), base) is base


def test_an_unreadable_checkpoint_is_left_to_megatron(tmp_path):
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("3")
    broken = tmp_path / "iter_0000003"
    broken.mkdir()
    (broken / "metadata.json").write_text("{not json")  # looks like a dist checkpoint, cannot be read
    with pytest.warns(UserWarning, match="could not read"):
        check_resume_across_expert_layouts(_args(str(tmp_path), comet=True))
