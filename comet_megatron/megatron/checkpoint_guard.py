"""Refuse a resume whose optimizer state would land on the wrong expert parameters.

Comet's experts store their weights stacked (one ``[E_local, 2F, H]`` and one ``[E_local, H, F]`` parameter
per layer) where Megatron's SequentialMLP has two parameters per expert. Model weights interchange through
the distributed checkpoint's per-expert keys (tests/test_checkpoint_interchange.py), and so does the
optimizer state saved in a model-space format (``--dist-ckpt-optim-fully-reshardable``). The distributed
optimizer's default, ``dp_reshardable``, stores the state as the flat gradient buffers laid out parameter
after parameter: the same total size under both layouts, so loading it across them would not fail — it would
pair Adam moments and fp32 master weights with the wrong experts. Megatron refuses the analogous GPT → hybrid
load for the same reason. This check runs before training starts (every rank reads the checkpoint's small
common state) and names the options that make the resume safe.
"""

from __future__ import annotations

import os
import pickle
import warnings
from dataclasses import dataclass

from comet_megatron.errors import CometConfigError

# Optimizer-state formats keyed by the model's per-expert checkpoint keys. ``fully_sharded_model_space`` is
# model-space too, but Comet's experts do not support it (README, Limits), so it is not listed.
MODEL_SPACE_FORMATS = ("fully_reshardable",)
_TRACKER = "latest_checkpointed_iteration.txt"


@dataclass(frozen=True)
class CheckpointInfo:
    path: str
    saved_with_comet: bool
    saved_optimizer: bool  # distributed-optimizer state that Megatron would load (not a release checkpoint)
    optim_sharding_type: str | None  # None: a checkpoint older than Megatron-Core 0.13's content metadata


def checkpoint_dir(load_dir: str, ckpt_step: int | None = None) -> str | None:
    """The directory Megatron would resume from: ``iter_{step:07d}`` or ``release``; ``None`` if none."""
    if ckpt_step:
        return os.path.join(load_dir, f"iter_{int(ckpt_step):07d}")
    tracker = os.path.join(load_dir, _TRACKER)
    if not os.path.isfile(tracker):
        return None
    with open(tracker) as f:
        text = f.read().strip()
    return os.path.join(load_dir, "release" if text == "release" else f"iter_{int(text):07d}")


def read_checkpoint_info(load_dir: str, ckpt_step: int | None = None) -> CheckpointInfo | None:
    """What the checkpoint Megatron would load says about itself; ``None`` when there is none or it is not
    a distributed checkpoint (legacy formats have no per-expert keys to interchange anyway)."""
    from megatron.core import dist_checkpointing

    path = checkpoint_dir(load_dir, ckpt_step)
    if path is None or not os.path.isdir(path) or not dist_checkpointing.check_is_distributed_checkpoint(path):
        return None
    common = dist_checkpointing.load_common_state_dict(path)
    saved_args = common.get("args")
    metadata = dist_checkpointing.load_content_metadata(preloaded_state_dict=common) or {}
    return CheckpointInfo(
        path=path,
        saved_with_comet=bool(getattr(saved_args, "moe_comet", False)),
        # Megatron loads no optimizer state from release checkpoints; the regular optimizer's state is stored
        # per parameter under the model's keys (model space), which crosses layouts
        saved_optimizer=(
            os.path.basename(path) != "release"
            and not getattr(saved_args, "no_save_optim", False)
            and bool(getattr(saved_args, "use_distributed_optimizer", True))
        ),
        optim_sharding_type=metadata.get("distrib_optim_sharding_type"),
    )


def check_resume_across_expert_layouts(args) -> None:
    """Raise :class:`CometConfigError` when ``--load`` would restore distributed-optimizer state saved with the
    other expert layout (Megatron's experts vs ``--moe-comet``) in a bucket-space format."""

    def arg(name, default=None):
        return getattr(args, name, default)

    if not arg("load") or not arg("num_experts") or not arg("use_distributed_optimizer"):
        return
    if arg("no_load_optim") or arg("finetune"):
        return
    from megatron.core.dist_checkpointing.core import CheckpointingException

    try:
        info = read_checkpoint_info(arg("load"), arg("ckpt_step"))
    except (OSError, ValueError, EOFError, RuntimeError, pickle.UnpicklingError, CheckpointingException) as exc:
        # an unreadable checkpoint is Megatron's to report when it loads it; API changes still raise
        warnings.warn(
            f"comet-megatron could not read {arg('load')} to check its expert layout ({type(exc).__name__}: {exc}); "
            "Megatron will load it as usual",
            stacklevel=2,
        )
        return
    if info is None or not info.saved_optimizer:
        return
    running_comet = bool(arg("moe_comet"))
    if info.saved_with_comet == running_comet or info.optim_sharding_type in MODEL_SPACE_FORMATS:
        return
    saved = "--moe-comet" if info.saved_with_comet else "Megatron's MoE experts"
    running = "--moe-comet" if running_comet else "Megatron's MoE experts"
    raise CometConfigError(
        f"--load {info.path}: this checkpoint was saved with {saved} and its distributed-optimizer state in "
        f"the {info.optim_sharding_type or 'legacy'!r} format (flat gradient buffers), which cannot be restored "
        f"into {running} (the expert parameters are laid out differently, so the state would be paired with the "
        "wrong experts). To keep the optimizer state, save the checkpoint with --dist-ckpt-optim-fully-reshardable "
        "(model-space state, which crosses layouts; Megatron-Core 0.16.1/0.19.2 load it only with Apex or "
        "Transformer Engine installed); or resume with --no-load-optim to keep only the model weights (they "
        "interchange)."
    )
