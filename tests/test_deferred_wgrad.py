"""The deferred weight-gradient queue (``comet_megatron/ops/deferred_wgrad.py``) inside real autograd passes.

A chain of layers whose backward submits one job each: with depth ``N`` a layer's job runs during the backward of the
``N``-th layer after it (in backward order), the rest when the pass ends, so every job has run when ``backward()``
returns; a nested pass (a reentrant checkpoint's) drains at its own end. The fused backend's use of it is checked
under the interpreter (``tests/test_fused_interpret.py``) and on the GPU.
"""

from __future__ import annotations

import pytest
import torch
import torch.utils.checkpoint

from comet_megatron.ops.deferred_wgrad import DEFERRED_WEIGHT_GRADS, ENV_WGRAD_DEFER, WeightGradJob, wgrad_defer_depth


@pytest.fixture(autouse=True)
def _empty_queue():
    """The queue is process-global: a failing test must not leave jobs for the next one."""
    DEFERRED_WEIGHT_GRADS.clear()
    yield
    DEFERRED_WEIGHT_GRADS.clear()


class _Layer(torch.autograd.Function):
    """y = 2x; its backward logs its start, then submits a job (``flops`` = 10 x its index + 10) that logs when it
    runs, carried into the next forward with ``carry``."""

    @staticmethod
    def forward(ctx, x, index, depth, log, carry=False):
        ctx.index, ctx.depth, ctx.log, ctx.carry = index, depth, log, carry
        return x * 2

    @staticmethod
    def backward(ctx, grad):
        log, index = ctx.log, ctx.index
        log.append(("backward", index))
        job = WeightGradJob(lambda: log.append(("job", index)), flops=10.0 * index + 10.0)
        DEFERRED_WEIGHT_GRADS.submit([job], ctx.depth, carry=ctx.carry)
        return grad * 2, None, None, None, None


def _run(layers: int, depth: int) -> list:
    log: list = []
    x = torch.randn(3, requires_grad=True)
    y = x
    for index in range(layers):
        y = _Layer.apply(y, index, depth, log)
    y.sum().backward()
    log.append(("returned", None))
    assert torch.equal(x.grad, torch.full((3,), 2.0**layers))
    return log


def test_depth_zero_runs_each_job_in_its_own_layer():
    assert _run(3, 0) == [
        ("backward", 2), ("job", 2), ("backward", 1), ("job", 1), ("backward", 0), ("job", 0), ("returned", None)
    ]  # fmt: skip


@pytest.mark.parametrize("depth", [1, 2])
def test_jobs_run_depth_layers_late_and_the_rest_when_the_pass_ends(depth):
    layers = 4
    log = _run(layers, depth)
    assert len(DEFERRED_WEIGHT_GRADS) == 0
    assert log[-1] == ("returned", None)
    order = [entry for entry in log if entry[0] == "job"]
    assert order == [("job", i) for i in reversed(range(layers))]  # oldest first
    for index in range(layers):
        ran = log.index(("job", index))
        later = index - depth  # the layer whose backward runs it
        if later >= 0:
            assert log[ran - 1] == ("backward", later), log
        else:  # drained at the end of the pass, after every layer's backward
            assert ran > log.index(("backward", 0)), log


def test_more_depth_than_layers_drains_everything_at_the_end():
    log = _run(2, 5)
    assert log == [("backward", 1), ("backward", 0), ("job", 1), ("job", 0), ("returned", None)]


def test_a_nested_pass_drains_at_its_own_end():
    """A reentrant checkpoint runs its segment's backward as a nested pass: jobs queued there run before it ends."""
    log: list = []
    x = torch.randn(3, requires_grad=True)

    def segment(inp):
        return _Layer.apply(_Layer.apply(inp, 1, 1, log), 2, 1, log)

    y = _Layer.apply(torch.utils.checkpoint.checkpoint(segment, x, use_reentrant=True), 3, 1, log)
    y.sum().backward()
    log.append(("returned", None))
    assert len(DEFERRED_WEIGHT_GRADS) == 0
    # layer 3 is outside the checkpoint: its job is queued when the nested pass starts and drains with it
    assert log == [
        ("backward", 3), ("backward", 2), ("job", 3), ("backward", 1), ("job", 2), ("job", 1), ("returned", None)
    ]  # fmt: skip


@pytest.mark.parametrize("value,depth", [("", 0), ("0", 0), (" 3 ", 3)])
def test_depth_from_the_environment(monkeypatch, value, depth):
    monkeypatch.setenv(ENV_WGRAD_DEFER, value)
    assert wgrad_defer_depth() == depth


@pytest.mark.parametrize("value", ["-1", "two", "1.5"])
def test_bad_depth_names_the_variable(monkeypatch, value):
    monkeypatch.setenv(ENV_WGRAD_DEFER, value)
    with pytest.raises(ValueError, match=ENV_WGRAD_DEFER):
        wgrad_defer_depth()


class _Failing(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 1

    @staticmethod
    def backward(ctx, grad):
        raise ValueError("backward failed")


def test_jobs_left_by_a_failed_pass_are_refused_until_cleared():
    log: list = []
    x = torch.randn(3, requires_grad=True)
    y = _Layer.apply(_Failing.apply(_Layer.apply(x, 0, 1, log)), 1, 1, log)
    with pytest.raises(ValueError, match="backward failed"):
        y.sum().backward()
    assert len(DEFERRED_WEIGHT_GRADS) == 1 and ("job", 1) not in log  # queued by layer 1, never drained
    with pytest.raises(RuntimeError, match="DEFERRED_WEIGHT_GRADS.clear"):
        DEFERRED_WEIGHT_GRADS.check_nothing_left_over()
    DEFERRED_WEIGHT_GRADS.clear()
    DEFERRED_WEIGHT_GRADS.check_nothing_left_over()
    assert _run(2, 1)[-1] == ("returned", None) and len(DEFERRED_WEIGHT_GRADS) == 0


def test_a_forward_inside_a_backward_pass_may_see_queued_jobs():
    """What a recomputed forward (activation checkpointing) sees: the jobs of the pass it runs in."""
    seen: list = []

    class _Checks(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 1

        @staticmethod
        def backward(ctx, grad):
            DEFERRED_WEIGHT_GRADS.check_nothing_left_over()  # inside the pass: no error though jobs are queued
            seen.append(len(DEFERRED_WEIGHT_GRADS))
            return grad

    log: list = []
    x = torch.randn(3, requires_grad=True)
    _Layer.apply(_Checks.apply(x), 0, 2, log).sum().backward()
    assert seen == [1] and log[-1] == ("job", 0) and len(DEFERRED_WEIGHT_GRADS) == 0


# --- carrying into the next forward (COMET_WGRAD_CARRY) ---------------------------------------------------------------


def _carrying(x, index, depth, log):
    return _Layer.apply(x, index, depth, log, True)


def test_carry_keeps_depth_layers_past_the_end_of_the_pass():
    log: list = []
    x = torch.randn(3, requires_grad=True)
    y = x
    for index in range(4):
        y = _carrying(y, index, 2, log)
    y.sum().backward()
    # layers 3 and 2 ran in the slots of layers 1 and 0; layers 1 and 0 (jobs of 20 and 10 FLOPs) are carried
    assert [e for e in log if e[0] == "job"] == [("job", 3), ("job", 2)]
    assert len(DEFERRED_WEIGHT_GRADS) == 2
    DEFERRED_WEIGHT_GRADS.check_nothing_left_over()  # carried from a finished pass: not stale
    # a forward's wait slot: oldest first, a job runs if at least half of it fits, order is kept
    assert DEFERRED_WEIGHT_GRADS.run_within(9.0) == 0.0  # layer 1's job (20) needs 10
    assert DEFERRED_WEIGHT_GRADS.run_within(12.0) == 20.0 and log[-1] == ("job", 1)
    DEFERRED_WEIGHT_GRADS.drain()
    assert log[-1] == ("job", 0) and len(DEFERRED_WEIGHT_GRADS) == 0


def test_carried_layers_run_first_in_the_next_backward():
    log: list = []
    for micro_batch in range(2):
        x = torch.randn(3, requires_grad=True)
        y = x
        for index in range(3):
            y = _carrying(y, 10 * micro_batch + index, 1, log)
        y.sum().backward()
        log.append(("returned", micro_batch))
    DEFERRED_WEIGHT_GRADS.drain()
    jobs = [e[1] for e in log if e[0] == "job"]
    assert jobs == [2, 1, 0, 12, 11, 10]  # every job once, FIFO across micro-batches
    assert log.index(("job", 0)) > log.index(("returned", 0))  # carried past the first pass


@pytest.mark.parametrize("defer,carry,ok", [("1", "1", True), ("2", "0", True), ("0", "1", False), ("1", "yes", False)])
def test_carry_from_the_environment(monkeypatch, defer, carry, ok):
    from comet_megatron.ops.deferred_wgrad import ENV_WGRAD_CARRY, wgrad_carry

    monkeypatch.setenv(ENV_WGRAD_DEFER, defer)
    monkeypatch.setenv(ENV_WGRAD_CARRY, carry)
    if ok:
        assert wgrad_carry() == (carry == "1")
    else:
        with pytest.raises(ValueError, match=ENV_WGRAD_CARRY):
            wgrad_carry()


def test_a_forward_wait_slot_runs_the_flops_of_the_rows_this_rank_is_behind_by():
    from types import SimpleNamespace

    from comet_megatron.backends.fused import _run_carried_weight_grads

    ran: list = []
    for flops in (100.0, 100.0, 100.0, 100.0):
        DEFERRED_WEIGHT_GRADS._layers.append(_queued([WeightGradJob(lambda f=flops: ran.append(f), flops)]))
    w1, w2 = torch.empty(2, 3, 5), torch.empty(2, 5, 3)  # forward FLOPs per row: 2 * (15 + 15) = 60
    _run_carried_weight_grads(None, SimpleNamespace(recv_rows_per_rank=[7, 9], recv_rows=9), w1, w2)
    assert ran == []  # the busiest rank does not wait
    _run_carried_weight_grads(None, SimpleNamespace(recv_rows_per_rank=[7, 9], recv_rows=7), w1, w2)
    assert ran == [100.0]  # 2 rows behind: 120 FLOPs of wait; the second job would end at 200, past 120 + 100 / 2
    _run_carried_weight_grads(None, SimpleNamespace(recv_rows_per_rank=[6, 9], recv_rows=6), w1, w2)
    assert ran == [100.0] * 3  # 3 rows behind: 180 of wait, two more jobs (the second ends at 200 <= 180 + 50)
    assert len(DEFERRED_WEIGHT_GRADS) == 1
    DEFERRED_WEIGHT_GRADS.drain()


def _queued(jobs):
    from comet_megatron.ops.deferred_wgrad import _QueuedLayer

    layer = _QueuedLayer(jobs, graph_task=-1)
    layer.pass_done = True
    return layer


def test_a_nested_pass_ending_does_not_vouch_for_the_enclosing_pass():
    """Carrying, a reentrant checkpoint's pass ends inside the outer pass; if the outer pass then raises, its queued
    layer is still stale (the nested pass's end marks only its own layers as finished)."""
    log: list = []
    x = torch.randn(3, requires_grad=True)

    def segment(inp):
        return _carrying(inp, 1, 2, log)

    inner = torch.utils.checkpoint.checkpoint(segment, _Failing.apply(x), use_reentrant=True)
    y = _carrying(inner, 2, 2, log)  # queued by the outer pass, carried past the nested pass's end
    with pytest.raises(ValueError, match="backward failed"):
        y.sum().backward()
    assert len(DEFERRED_WEIGHT_GRADS) == 2
    with pytest.raises(RuntimeError, match="did not finish"):
        DEFERRED_WEIGHT_GRADS.check_nothing_left_over()
