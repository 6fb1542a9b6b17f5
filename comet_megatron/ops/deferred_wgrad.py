"""Expert weight gradients deferred by a few MoE layers within one backward pass (``COMET_WGRAD_DEFER``).

Why: at EP > 1 every MoE layer's backward synchronises the ranks twice (each rank's data-gradient kernel reads its
peers' output-gradient rows; its top-k reduce waits for their input-gradient rows), so a layer's backward lasts as
long as the busiest rank's data gradients *plus its weight gradients*. Which rank is busiest changes from layer to
layer with the routing. The weight gradients feed nothing but ``main_grad``, so a layer's can run during a later
layer's backward: with depth ``N``, layer ``L``'s weight gradients run in the slot of the ``N``-th MoE layer after it
in backward order (after that layer's input-gradient push, before its reduce, where the lighter rank would wait), and
whatever is still queued when the backward pass ends runs then, from an autograd final callback on the caller's
stream. A rank's weight-gradient work then pairs with another layer's routing, and one rank's excess in one layer is
not paid by every rank in that layer's wait.

Cost: the operands of up to ``N`` layers' weight gradients stay alive longer (``[R, 2F + H]`` for fc1's and
``[R, F + H]`` for fc2's, bf16, R = rows received). Correctness needs nobody to read ``main_grad`` before the backward
pass ends: Megatron's DDP without ``--overlap-grad-reduce`` reduces gradients after the backward (safe); with it, its
per-parameter hooks may start reducing a bucket as soon as a layer returns its (dummy) weight gradient, before the
deferred sum has run, so the two are refused together at startup (``--moe-comet-wgrad-defer``). Inside a reentrant
activation checkpoint (``--recompute-modules moe``) the checkpoint's own backward pass ends after each layer, so
nothing is deferred beyond it (correct, no gain). A backward pass that raises never reaches its final callback: the
next fused forward then refuses to run until :meth:`DeferredWeightGrads.clear` drops the stale jobs.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable

import torch

ENV_WGRAD_DEFER = "COMET_WGRAD_DEFER"


def wgrad_defer_depth() -> int:
    """``COMET_WGRAD_DEFER``: by how many MoE layers the fused backward defers its weight gradients (0 or unset: not
    at all). A value that is not an integer >= 0 is an error naming the variable."""
    raw = os.environ.get(ENV_WGRAD_DEFER, "0").strip() or "0"
    try:
        depth = int(raw)
    except ValueError:
        depth = -1
    if depth < 0:
        raise ValueError(
            f"{ENV_WGRAD_DEFER}={raw!r}: give the number of MoE layers to defer the weight gradients by "
            "(an integer >= 0; 0 computes them in their own layer's backward)"
        )
    return depth


WeightGradJob = Callable[[], None]  # adds one weight gradient into main_grad, then frees its operands


class DeferredWeightGrads:
    """A FIFO of per-layer weight-gradient jobs, run ``depth`` layers late and drained when the backward pass ends.

    Each :meth:`submit` is one layer's jobs (run in the order given). One instance serves the process
    (:data:`DEFERRED_WEIGHT_GRADS`).
    """

    def __init__(self):
        self._layers: deque[list[WeightGradJob]] = deque()

    def __len__(self) -> int:
        """Layers whose weight gradients are queued."""
        return len(self._layers)

    def submit(self, jobs: list[WeightGradJob], depth: int) -> None:
        """Queue one layer's ``jobs``, then run the oldest layers' until at most ``depth`` are queued.

        With ``depth > 0`` this must be called from inside an autograd backward pass (a ``Function.backward``): it
        registers :meth:`drain` as that pass's final callback, so nothing is left queued once the pass returns.
        """
        if jobs:
            self._layers.append(list(jobs))
        if self._layers and depth > 0:
            # on every submit: a nested pass (a reentrant checkpoint's) drains at its own end, and the outer pass
            # still needs a callback for what later layers queue; draining an empty queue costs nothing
            torch.autograd.Variable._execution_engine.queue_callback(self.drain)
        while len(self._layers) > max(depth, 0):
            for job in self._layers.popleft():
                job()

    def drain(self) -> None:
        """Run every queued job, oldest layer first."""
        while self._layers:
            for job in self._layers.popleft():
                job()

    def clear(self) -> None:
        """Drop every queued job without running it (after a backward pass that raised)."""
        self._layers.clear()

    def check_nothing_left_over(self) -> None:
        """Raise if jobs are queued outside any backward pass: only a pass that raised leaves them (its final
        callback never ran), and running them later would add that pass's gradients to another step's ``main_grad``.
        Called by every fused forward; a forward recomputed inside a backward pass (activation checkpointing) may
        legitimately see jobs of the pass it runs in."""
        if self._layers and torch._C._current_graph_task_id() == -1:
            raise RuntimeError(
                f"comet: {len(self._layers)} MoE layer(s) of deferred expert weight gradients ({ENV_WGRAD_DEFER}) are "
                "still queued from a backward pass that did not finish; after handling its error call "
                "comet_megatron.ops.deferred_wgrad.DEFERRED_WEIGHT_GRADS.clear() (and zero the gradients) before "
                "the next step"
            )


DEFERRED_WEIGHT_GRADS = DeferredWeightGrads()
