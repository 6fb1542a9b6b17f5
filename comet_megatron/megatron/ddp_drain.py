"""Megatron's DistributedDataParallel runs deferred weight gradients before it touches ``main_grad``.

With ``COMET_WGRAD_CARRY=1`` (``comet_megatron/ops/deferred_wgrad.py``) expert weight gradients may still be queued
when a backward pass returns; they must be in ``main_grad`` before Megatron reduces gradients. Megatron-Core's
``DistributedDataParallel`` does so through ``start_grad_sync`` / ``finish_grad_sync`` (``finalize_model_grads`` calls
the latter after the last micro-batch): :func:`install_deferred_wgrad_drain` wraps both to drain the queue first, and
``zero_grad_buffer`` to drop what would be zeroed anyway (nothing, unless a step was abandoned). With
``overlap_grad_reduce`` a bucket's reduction starts inside the backward pass, from the bucket's own hooks, before a
deferred gradient may have landed: a DDP built that way while ``COMET_WGRAD_DEFER`` is on raises at construction.
Class-level and idempotent; nothing changes while the queue is empty. ``CometMoELayer`` installs it whenever
``COMET_WGRAD_DEFER`` >= 1.
"""

from __future__ import annotations

import functools

from comet_megatron.errors import CometConfigError
from comet_megatron.ops.deferred_wgrad import DEFERRED_WEIGHT_GRADS, ENV_WGRAD_DEFER, wgrad_defer_depth

_MARK = "_comet_drains_deferred_wgrads"


def install_deferred_wgrad_drain() -> None:
    """Wrap Megatron-Core's ``DistributedDataParallel`` so that it drains :data:`DEFERRED_WEIGHT_GRADS` before
    reducing gradients and clears it when zeroing them."""
    from megatron.core.distributed import DistributedDataParallel

    if getattr(DistributedDataParallel, _MARK, False):
        return
    DistributedDataParallel.__init__ = _checked_init(DistributedDataParallel.__init__)
    for name in ("start_grad_sync", "finish_grad_sync"):
        setattr(
            DistributedDataParallel, name, _before(getattr(DistributedDataParallel, name), DEFERRED_WEIGHT_GRADS.drain)
        )
    DistributedDataParallel.zero_grad_buffer = _before(
        DistributedDataParallel.zero_grad_buffer, DEFERRED_WEIGHT_GRADS.clear
    )
    setattr(DistributedDataParallel, _MARK, True)


def _checked_init(init):
    @functools.wraps(init)
    def wrapped(self, config, ddp_config, *args, **kwargs):
        if getattr(ddp_config, "overlap_grad_reduce", False) and wgrad_defer_depth() > 0:
            raise CometConfigError(
                f"{ENV_WGRAD_DEFER} (--moe-comet-wgrad-defer) with overlap_grad_reduce (--overlap-grad-reduce): "
                "Megatron's DDP may start reducing an expert's gradient bucket before a deferred weight gradient is "
                f"added; unset one of them"
            )
        return init(self, config, ddp_config, *args, **kwargs)

    return wrapped


def _before(method, first):
    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        first()
        return method(self, *args, **kwargs)

    return wrapped
