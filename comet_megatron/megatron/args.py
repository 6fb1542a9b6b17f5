"""Command-line integration: ``--moe-comet`` and its options for Megatron's ``extra_args_provider``.

Megatron-LM (and megatron-core >= 0.19's ``megatron.training``) build their parser, then call
``extra_args_provider(parser)``; :func:`add_comet_args` is such a provider. After parsing,
:func:`validate_comet_args` rejects options Comet cannot run (naming each one and what to set) and
:func:`comet_layer_spec` rewrites the GPT layer / decoder-block spec Megatron built so that its MoE layers
are Comet's. Nothing here needs ``megatron.training``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from types import SimpleNamespace

from comet_megatron.backends.selection import BACKEND_CHOICES
from comet_megatron.errors import CometConfigError
from comet_megatron.ops.deferred_wgrad import (
    ENV_WGRAD_CARRY,
    ENV_WGRAD_DEFER,
    wgrad_carry_requested,
    wgrad_defer_depth,
)
from comet_megatron.ops.grouped_linear import WGRAD_ACCUMULATION_CHOICES

# The environment variables the package reads (comet_megatron/tuning.py, comet_megatron/backends/fused.py,
# comet_megatron/ops/grouped_linear.py, comet_megatron/ops/deferred_wgrad.py).
ENV_TUNING_CACHE = "COMET_TUNING_CACHE"
ENV_KERNEL_CONFIG = "COMET_KERNEL_CONFIG"
ENV_DEBUG = "COMET_DEBUG"
ENV_WGRAD_ACCUMULATION = "COMET_WGRAD_ACCUMULATION"


def add_comet_args(parser):
    """Add the Comet options to a Megatron (or any argparse) parser; returns the parser."""
    group = parser.add_argument_group(title="comet (comet-megatron)")
    group.add_argument(
        "--moe-comet",
        action="store_true",
        help="Run the MoE layers with Comet (fused expert-parallel communication + expert GEMMs). Needs "
        "--num-experts and --moe-token-dispatcher-type alltoall (or allgather), which Comet replaces.",
    )
    group.add_argument(
        "--moe-comet-backend",
        choices=BACKEND_CHOICES,
        default="auto",
        help="'fused': Comet's Triton kernels over NVSHMEM symmetric memory (Hopper GPUs, EP within a node); "
        "'reference': plain PyTorch all-to-all + grouped GEMMs; 'auto' (default): fused when it can run, "
        "else reference with one warning saying why.",
    )
    group.add_argument(
        "--moe-comet-tuning-cache",
        default=None,
        metavar="PATH",
        help=f"JSON file of tuned kernel configurations (sets {ENV_TUNING_CACHE}; default "
        "$XDG_CACHE_HOME/comet_megatron/tuning.json).",
    )
    group.add_argument(
        "--moe-comet-kernel-config",
        default=None,
        metavar="JSON",
        help=f"Override fields of the fused kernels' configuration, e.g. '{{\"comm_programs\": 24, "
        f"\"dgrad_comm_programs\": 32}}' (push programs of the forward's and of the backward's dispatch; sets "
        f"{ENV_KERNEL_CONFIG}; for experiments).",
    )
    group.add_argument(
        "--moe-comet-wgrad-accumulation",
        choices=WGRAD_ACCUMULATION_CHOICES,
        default=None,
        help="How the experts' weight gradients reach Megatron's fp32 main_grad (sets "
        f"{ENV_WGRAD_ACCUMULATION}). 'auto' (default): Comet adds them itself, needing no Apex — on GPUs by "
        "per-expert cuBLAS GEMMs accumulating in fp32 when each expert's GEMM is large (>= 17 GFLOP), else by one "
        "Triton kernel for all experts; 'per_expert' / 'kernel' / 'grouped' (a grouped GEMM and an add): always "
        "that way; 'megatron': only with --gradient-accumulation-fusion, else a bf16 gradient that Megatron's DDP "
        "hook adds (Megatron's own experts' behaviour).",
    )
    group.add_argument(
        "--moe-comet-wgrad-defer",
        type=_non_negative_int,
        default=None,
        metavar="N",
        help="Run each MoE layer's expert weight gradients N MoE layers later in the backward pass (the rest when it "
        f"ends; sets {ENV_WGRAD_DEFER}; default 0: in their own layer). At EP > 1 a layer's backward waits for its "
        "busiest rank; deferring pairs one layer's weight gradients with another layer's routing. Keeps up to N "
        "layers' weight-gradient operands alive longer; fused backward only; not with --overlap-grad-reduce.",
    )
    group.add_argument(
        "--moe-comet-wgrad-carry",
        action="store_true",
        help="With --moe-comet-wgrad-defer N: the weight gradients still deferred when a backward pass ends (up to N "
        "layers) run in the next micro-batch's forward, in the MoE layers' waits for a busier rank, and the rest "
        f"before Megatron's DDP reduces gradients (sets {ENV_WGRAD_CARRY}=1). Needs Megatron's DDP (not FSDP).",
    )
    group.add_argument(
        "--moe-comet-debug",
        action="store_true",
        help=f"Extra consistency checks in the fused backend (sets {ENV_DEBUG}=1; slower).",
    )
    return parser


def _non_negative_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def with_comet_args(other=None):
    """An ``extra_args_provider`` that adds Comet's options after ``other``'s (``other`` may be None)."""

    def provider(parser):
        if other is not None:
            parser = other(parser)
        return add_comet_args(parser)

    return provider


class _ArgsAsConfig(SimpleNamespace):
    """Parsed Megatron args seen as a ``TransformerConfig`` (its fields are 1:1 argument names, except
    ``num_moe_experts`` = ``--num-experts``); options an older parser lacks read as unset."""

    def __getattr__(self, name):  # only called for missing attributes
        return None


def _arg(args, name, default=None):
    return getattr(args, name, default)


def _option_problems(args) -> list[str]:
    """Problems visible only in the arguments (process-group sizes, recompute and overlap options)."""
    problems = []
    num_experts = _arg(args, "num_experts")
    ep = _arg(args, "expert_model_parallel_size", 1) or 1
    if num_experts and num_experts % ep:
        problems.append(
            f"num_moe_experts={num_experts} is not divisible by the expert-parallel size {ep} "
            "(--expert-model-parallel-size): choose an EP size that divides --num-experts"
        )
    etp = _arg(args, "expert_tensor_parallel_size")
    if etp is None:  # Megatron's default: the tensor-parallel size
        etp = _arg(args, "tensor_model_parallel_size", 1) or 1
    if etp != 1:
        problems.append(
            f"expert tensor parallelism ({etp}) is not supported: set --expert-tensor-parallel-size 1 "
            "(it defaults to --tensor-model-parallel-size)"
        )
    if _arg(args, "overlap_moe_expert_parallel_comm"):
        problems.append(
            "--overlap-moe-expert-parallel-comm is not supported: Comet overlaps the expert-parallel "
            "communication itself; unset it"
        )
    if "moe_act" in (_arg(args, "recompute_modules") or []):
        problems.append(
            "--recompute-modules moe_act is not supported by Comet's experts: recompute the whole MoE layer "
            "with --recompute-modules moe (with --recompute-granularity selective)"
        )
    defer, carry = _arg(args, "moe_comet_wgrad_defer"), _arg(args, "moe_comet_wgrad_carry")
    try:  # the options, or else the environment variables they set (which work without them)
        defer = wgrad_defer_depth() if defer is None else defer
        carry = carry or wgrad_carry_requested()
    except ValueError as exc:
        problems.append(str(exc))
        defer, carry = 0, False
    if defer > 0 and _arg(args, "overlap_grad_reduce"):
        problems.append(
            "--moe-comet-wgrad-defer with --overlap-grad-reduce: Megatron's DDP may start reducing an expert's "
            "gradient bucket before a deferred weight gradient is added; unset one of them"
        )
    if carry:
        if defer <= 0:
            problems.append(
                "--moe-comet-wgrad-carry needs --moe-comet-wgrad-defer N with N >= 1 (the MoE layers to carry)"
            )
        fsdp = [f"--{o.replace('_', '-')}" for o in ("use_torch_fsdp2", "use_megatron_fsdp") if _arg(args, o)]
        if fsdp:
            problems.append(
                f"--moe-comet-wgrad-carry with {' / '.join(fsdp)}: carried weight gradients are drained by Megatron's "
                "DistributedDataParallel before it reduces gradients, which FSDP does not use; unset one of them"
            )
    kernel_config = _arg(args, "moe_comet_kernel_config")
    if kernel_config:
        from comet_megatron.tuning import KernelConfig

        try:
            overrides = json.loads(kernel_config)
            dataclasses.replace(KernelConfig(), **overrides)
        except (ValueError, TypeError) as exc:
            fields = ", ".join(f.name for f in dataclasses.fields(KernelConfig))
            problems.append(
                f"--moe-comet-kernel-config {kernel_config!r} is not a JSON object of KernelConfig fields "
                f"({fields}): {exc}"
            )
    return problems


def validate_comet_args(args) -> None:
    """With ``--moe-comet``: raise :class:`CometConfigError` listing every option Comet cannot run.

    The configuration checks are the ones ``CometMoELayer`` applies at construction
    (:func:`comet_megatron.megatron.validation.validate_moe_config`), run on the arguments so that
    they fail at startup; the process-group sizes come from the arguments (no process group exists yet).
    Without ``--moe-comet`` this does nothing.
    """
    if not _arg(args, "moe_comet"):
        return
    from comet_megatron.megatron.validation import validate_moe_config

    problems = []
    if _arg(args, "moe_comet_backend", "auto") not in BACKEND_CHOICES:
        problems.append(
            f"--moe-comet-backend {args.moe_comet_backend!r} is unknown: choose one of {', '.join(BACKEND_CHOICES)}"
        )
    if not _arg(args, "num_experts"):
        problems.append("--moe-comet needs an MoE model: set --num-experts (Comet only replaces MoE layers)")
    else:
        view = _ArgsAsConfig(**vars(args))
        view.num_moe_experts = args.num_experts
        ep_and_etp_from_args = SimpleNamespace(ep=None, expt_tp=None)  # sizes checked in _option_problems
        try:
            validate_moe_config(view, ep_and_etp_from_args)
        except CometConfigError as exc:
            problems.extend(str(exc).split("\n- ")[1:])
        problems.extend(_option_problems(args))
    if problems:
        raise CometConfigError("--moe-comet cannot run this configuration:\n- " + "\n- ".join(problems))


def export_comet_env(args) -> None:
    """Set the environment variables the Comet kernels read from the tuner options in ``args``."""
    if _arg(args, "moe_comet_tuning_cache"):
        os.environ[ENV_TUNING_CACHE] = os.path.abspath(os.path.expanduser(args.moe_comet_tuning_cache))
    if _arg(args, "moe_comet_kernel_config"):
        os.environ[ENV_KERNEL_CONFIG] = args.moe_comet_kernel_config
    if _arg(args, "moe_comet_debug"):
        os.environ[ENV_DEBUG] = "1"
    if _arg(args, "moe_comet_wgrad_accumulation"):
        os.environ[ENV_WGRAD_ACCUMULATION] = args.moe_comet_wgrad_accumulation
    if _arg(args, "moe_comet_wgrad_defer") is not None:
        os.environ[ENV_WGRAD_DEFER] = str(args.moe_comet_wgrad_defer)
    if _arg(args, "moe_comet_wgrad_carry"):
        os.environ[ENV_WGRAD_CARRY] = "1"


def comet_layer_spec(args, base_spec):
    """``base_spec`` (a GPT layer spec, decoder block spec or list of layer specs, as Megatron built it) with
    its MoE layers swapped for Comet's when ``--moe-comet`` is set; ``base_spec`` itself otherwise.

    Validates the arguments and exports the tuner options to the environment first. With or without the
    flag, a ``--load`` whose optimizer state cannot cross expert layouts is refused
    (:func:`~comet_megatron.megatron.checkpoint_guard.check_resume_across_expert_layouts`).
    """
    from comet_megatron.megatron.checkpoint_guard import check_resume_across_expert_layouts

    check_resume_across_expert_layouts(args)
    if not _arg(args, "moe_comet"):
        return base_spec
    from comet_megatron.megatron.spec import to_comet_spec

    validate_comet_args(args)
    export_comet_env(args)
    return to_comet_spec(base_spec, backend=args.moe_comet_backend)
