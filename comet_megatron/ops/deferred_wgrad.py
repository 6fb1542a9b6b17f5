"""Expert weight gradients deferred by a few MoE layers (``COMET_WGRAD_DEFER``), optionally into the next forward.

Why: at EP > 1 every MoE layer's backward synchronises the ranks (each rank's data-gradient kernel reads its peers'
output-gradient rows; its top-k reduce waits for their input-gradient rows), so a layer's backward lasts as long as
the busiest rank's data gradients *plus its weight gradients*. Which rank is busiest changes from layer to layer with
the routing. The weight gradients feed nothing but ``main_grad``, so a layer's can run during a later layer's
backward: with depth ``N``, layer ``L``'s weight gradients run in the slot of the ``N``-th MoE layer after it in
backward order (after that layer's input-gradient push, before its reduce, where the lighter rank would wait), and
whatever is still queued when the backward pass ends runs then, from an autograd final callback on the caller's
stream. A rank's weight-gradient work then pairs with another layer's routing, and one rank's excess in one layer is
not paid by every rank in that layer's wait.

``COMET_WGRAD_CARRY=1`` goes one step further: what is queued when a backward pass ends (up to ``N`` layers) stays
queued into the next micro-batch's forward, whose MoE layers run queued jobs in their own wait slot (between the
combine push and the top-k reduce) for as many FLOPs as this rank received fewer rows than the busiest rank (the
forward's FLOPs per row). The gradients are then complete only once something drains the queue: Megatron-Core's
``DistributedDataParallel`` does, before it reduces or zeroes gradients, once
:func:`comet_megatron.megatron.ddp_drain.install_deferred_wgrad_drain` has run (the fused backend installs it when
carrying is on); a training loop without Megatron's DDP must call ``DEFERRED_WEIGHT_GRADS.drain()`` before it reads
``main_grad``.

Cost: the operands of up to ``N`` layers' weight gradients stay alive longer (``[R, 2F + H]`` for fc1's and
``[R, F + H]`` for fc2's, bf16, R = rows received); with carrying, also through the next forward. Correctness needs
nobody to read ``main_grad`` before the queue is drained: Megatron's DDP with ``--overlap-grad-reduce`` may start
reducing a bucket as soon as a layer returns its (dummy) weight gradient, so the two are refused together at startup
(``--moe-comet-wgrad-defer``). Inside a reentrant activation checkpoint (``--recompute-modules moe``) the checkpoint's
own backward pass ends after each layer, so without carrying nothing is deferred beyond it (correct, no gain). A
backward pass that raises never reaches its final callback: the next fused forward then refuses to run until
:meth:`DeferredWeightGrads.clear` drops the stale jobs.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch

ENV_WGRAD_DEFER = "COMET_WGRAD_DEFER"
ENV_WGRAD_CARRY = "COMET_WGRAD_CARRY"


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


def wgrad_carry_requested() -> bool:
    """``COMET_WGRAD_CARRY`` alone: ``1`` or ``0`` / unset (anything else is an error naming the variable)."""
    raw = os.environ.get(ENV_WGRAD_CARRY, "0").strip() or "0"
    if raw not in ("0", "1"):
        raise ValueError(f"{ENV_WGRAD_CARRY}={raw!r}: give 1 (carry into the next forward) or 0")
    return raw == "1"


def wgrad_carry() -> bool:
    """``COMET_WGRAD_CARRY``: ``1`` carries the deferred weight gradients left at the end of a backward pass into the
    next forward (needs ``COMET_WGRAD_DEFER`` >= 1); ``0`` or unset: drained when the pass ends."""
    carry = wgrad_carry_requested()
    if carry and wgrad_defer_depth() == 0:
        raise ValueError(f"{ENV_WGRAD_CARRY}=1 needs {ENV_WGRAD_DEFER} >= 1 (the number of MoE layers to carry)")
    return carry


@dataclass
class WeightGradJob:
    """One weight gradient's accumulation into ``main_grad`` (then the release of its operands), not yet run.

    ``flops``: its GEMM's FLOPs, which a forward's wait slot compares with the wait it expects.
    """

    run: Callable[[], object]  # its return value is ignored
    flops: float = 0.0

    def __call__(self) -> None:
        self.run()


class _QueuedLayer:
    __slots__ = ("jobs", "graph_task", "pass_done")

    def __init__(self, jobs, graph_task: int):
        self.jobs = deque(jobs)
        self.graph_task = graph_task  # the autograd pass that queued it
        self.pass_done = False  # that pass finished (a carried layer, not a stale one)


class DeferredWeightGrads:
    """A FIFO of per-layer weight-gradient jobs, run ``depth`` layers late; drained when the backward pass ends, or
    with ``carry`` kept (up to ``depth`` layers) for the next forward's wait slots and a final :meth:`drain`.

    Each :meth:`submit` is one layer's jobs (run in the order given). One instance serves the process
    (:data:`DEFERRED_WEIGHT_GRADS`).
    """

    def __init__(self):
        self._layers: deque[_QueuedLayer] = deque()
        self.flops_run_within = 0.0  # by :meth:`run_within` since the process started (forward wait slots)

    def __len__(self) -> int:
        """Layers with queued jobs."""
        return len(self._layers)

    def submit(self, jobs: list[Callable[[], object]], depth: int, carry: bool = False) -> None:
        """Queue one layer's ``jobs``, then run the oldest layers' until at most ``depth`` are queued.

        With ``depth > 0`` this must be called from inside an autograd backward pass (a ``Function.backward``): it
        registers the end of that pass, which drains the queue (``carry``: down to ``depth`` layers).
        """
        task = torch._C._current_graph_task_id()
        if jobs:
            wrapped = (j if isinstance(j, WeightGradJob) else WeightGradJob(j) for j in jobs)
            self._layers.append(_QueuedLayer(wrapped, task))
        if self._layers and depth > 0:
            # on every submit: a nested pass (a reentrant checkpoint's) ends at its own end, and the outer pass still
            # needs a callback for what later layers queue; a second end of the same pass finds nothing to do
            torch.autograd.Variable._execution_engine.queue_callback(lambda: self._end_of_pass(depth, carry, task))
        self._run_until(depth)

    def run_within(self, flops: float) -> float:
        """Run queued jobs, oldest first, while their FLOPs fit in ``flops`` (a job counts if at least half of it
        fits); stop at the first that does not, so that jobs keep their order. Returns the FLOPs run."""
        ran = 0.0
        while self._layers:
            layer = self._layers[0]
            job = layer.jobs[0]
            if ran + job.flops / 2 > flops:
                break
            layer.jobs.popleft()
            if not layer.jobs:
                self._layers.popleft()
            job()
            ran += job.flops
        self.flops_run_within += ran
        return ran

    def drain(self) -> None:
        """Run every queued job, oldest layer first."""
        self._run_until(0)

    def clear(self) -> None:
        """Drop every queued job without running it (after a backward pass that raised; before gradients are zeroed)."""
        self._layers.clear()

    def check_nothing_left_over(self) -> None:
        """Raise if jobs queued by a backward pass that did not finish are still queued outside any backward pass:
        running them later would add that pass's gradients to another step's ``main_grad``. Called by every fused
        forward; a forward recomputed inside a backward pass (activation checkpointing) may legitimately see jobs of
        the pass it runs in, and carried layers (``carry``) come from passes that finished."""
        stale = sum(not layer.pass_done for layer in self._layers)
        if stale and torch._C._current_graph_task_id() == -1:
            raise RuntimeError(
                f"comet: {stale} MoE layer(s) of deferred expert weight gradients ({ENV_WGRAD_DEFER}) are still "
                "queued from a backward pass that did not finish; after handling its error call "
                "comet_megatron.ops.deferred_wgrad.DEFERRED_WEIGHT_GRADS.clear() (and zero the gradients) before "
                "the next step"
            )

    def _end_of_pass(self, depth: int, carry: bool, task: int) -> None:
        self._run_until(depth if carry else 0)
        for layer in self._layers:  # only this pass's: an enclosing pass may still fail
            if layer.graph_task == task:
                layer.pass_done = True

    def _run_until(self, layers: int) -> None:
        while len(self._layers) > max(layers, 0):
            layer = self._layers.popleft()
            while layer.jobs:
                layer.jobs.popleft()()


DEFERRED_WEIGHT_GRADS = DeferredWeightGrads()
