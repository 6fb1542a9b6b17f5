"""Choosing a backend: ``reference`` | ``fused`` | ``auto``."""

from __future__ import annotations

import importlib
import warnings

import torch.distributed as dist

from comet_megatron.backends.base import MoEBackend
from comet_megatron.backends.reference import ReferenceBackend
from comet_megatron.errors import CometConfigError

BACKEND_CHOICES = ("auto", "fused", "reference")
_warned_reasons: set[str] = set()


def fused_unavailable_reason(config, ep_group=None) -> str | None:
    """Why the fused backend cannot run in this process, or ``None`` when it can."""
    try:
        fused = importlib.import_module("comet_megatron.backends.fused")
    except ModuleNotFoundError as exc:
        if exc.name != "comet_megatron.backends.fused":
            return f"a dependency of the fused backend is missing: {exc.name}"
        return "this build of comet-megatron has no fused kernels (comet_megatron.backends.fused is absent)"
    return fused.unavailable_reason(config, ep_group)


def create_backend(name: str, config, ep_group: dist.ProcessGroup, num_local_experts: int) -> MoEBackend:
    """Instantiate the backend ``name`` for one EP group, resolving ``auto``.

    ``fused`` raises when it cannot run here; ``auto`` then falls back to ``reference`` with one
    warning per distinct reason.
    """
    if name not in BACKEND_CHOICES:
        raise CometConfigError(
            f"comet backend {name!r} is unknown: choose one of {', '.join(BACKEND_CHOICES)} "
            "(--moe-comet-backend / get_comet_moe_module_spec(backend=...))"
        )
    if name == "reference":
        return ReferenceBackend(ep_group, num_local_experts)
    reason = fused_unavailable_reason(config, ep_group)
    if reason is None:
        from comet_megatron.backends.fused import FusedBackend

        return FusedBackend(ep_group, num_local_experts, config)
    if name == "fused":
        raise CometConfigError(
            f"comet backend 'fused' cannot run here: {reason}. Use backend='reference' (or 'auto', "
            "which falls back to it)."
        )
    if reason not in _warned_reasons:
        _warned_reasons.add(reason)
        warnings.warn(f"comet backend 'auto' uses 'reference': {reason}", stacklevel=3)
    return ReferenceBackend(ep_group, num_local_experts)
