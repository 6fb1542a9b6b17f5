"""Megatron's DistributedDataParallel runs carried weight gradients before it touches ``main_grad``.

With ``COMET_WGRAD_CARRY=1`` (``comet_megatron/ops/deferred_wgrad.py``) expert weight gradients may still be queued
when a backward pass returns; they must be in ``main_grad`` before Megatron reduces gradients. Megatron-Core's
``DistributedDataParallel`` does so through ``start_grad_sync`` / ``finish_grad_sync`` (``finalize_model_grads`` calls
the latter after the last micro-batch): :func:`install_deferred_wgrad_drain` wraps both to drain the queue first, and
``zero_grad_buffer`` to drop what would be zeroed anyway (nothing, unless a step was abandoned). Class-level and
idempotent; it changes nothing while the queue is empty.
"""

from __future__ import annotations

import functools

from comet_megatron.ops.deferred_wgrad import DEFERRED_WEIGHT_GRADS

_MARK = "_comet_drains_deferred_wgrads"


def install_deferred_wgrad_drain() -> None:
    """Wrap Megatron-Core's ``DistributedDataParallel`` so that it drains :data:`DEFERRED_WEIGHT_GRADS` before
    reducing gradients and clears it when zeroing them."""
    from megatron.core.distributed import DistributedDataParallel

    if getattr(DistributedDataParallel, _MARK, False):
        return
    for name in ("start_grad_sync", "finish_grad_sync"):
        setattr(
            DistributedDataParallel, name, _before(getattr(DistributedDataParallel, name), DEFERRED_WEIGHT_GRADS.drain)
        )
    DistributedDataParallel.zero_grad_buffer = _before(
        DistributedDataParallel.zero_grad_buffer, DEFERRED_WEIGHT_GRADS.clear
    )
    setattr(DistributedDataParallel, _MARK, True)


def _before(method, first):
    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        first()
        return method(self, *args, **kwargs)

    return wrapped
