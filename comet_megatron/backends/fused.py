"""Fused backend: COMET's persistent Triton kernels over NVSHMEM symmetric memory.

forward:  layer0 (dispatch ⊕ fc1 ⊕ act·prob) -> layer1 (fc2 ⊕ combine push) -> top-k reduce.
backward (default, ``FusedBackend.fused_backward``): on what the forward saved — the dispatched rows and the
          fc1 output, as Megatron's experts keep them (no recompute) — output-gradient push ⊕ fc2 dgrad ⊕ the
          activation's backward (router-probability gradient included), weight gradients as grouped GEMMs
          (honouring gradient-accumulation fusion), fc1 dgrad ⊕ combine push, top-k reduce.
          ``COMET_FUSED_BACKWARD=0``: the same math in PyTorch with NCCL all_to_all (slower, more memory).
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import importlib
import json
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from comet_megatron.backends.base import Dispatched, ExpertWeights, MoEBackend
from comet_megatron.comm import all_to_all
from comet_megatron.fused_plan import HostPlan, build_plan, check_device_plan, device_plan
from comet_megatron.ops.deferred_wgrad import DEFERRED_WEIGHT_GRADS, WeightGradJob, wgrad_carry, wgrad_defer_depth
from comet_megatron.ops.grouped_linear import (
    accumulation_method,
    grad_after_main_grad,
    grouped_mm,
    grouped_weight_grad,
    main_grad_accumulation,
    weight_grad,
)
from comet_megatron.routing import LocalRouting, inverse_permutation, rank_major_to_expert_major
from comet_megatron.timing import process_timer, timed
from comet_megatron.tuning import KernelConfig, ShapeKey, choose_config

_SUPPORTED_ACTIVATIONS = {F.silu: "silu", F.gelu: "gelu"}


def _debug() -> bool:
    return os.environ.get("COMET_DEBUG", "0") not in ("", "0")


def _fused_backward() -> bool:
    """The overlapped backward kernels (default); ``COMET_FUSED_BACKWARD=0`` selects the PyTorch backward
    (all_to_all + grouped GEMMs), which keeps more activations and is slower (benchmarks/results)."""
    return os.environ.get("COMET_FUSED_BACKWARD", "1") not in ("", "0")


def _defer_gc() -> bool:
    """``COMET_DEFER_GC=1``: no Python garbage collection between the counts read and the first kernel launch of
    a forward (the GPU idles through that window, so a collection there stalls it; deferred, it runs while the
    GPU computes)."""
    return os.environ.get("COMET_DEFER_GC", "0") not in ("", "0")


def _host_plan() -> bool:
    """``COMET_HOST_PLAN=1``: build the kernels' tables on the host after the counts read (numpy, one pinned copy)
    instead of on the GPU before it — the previous path, kept to compare and as a fallback."""
    return os.environ.get("COMET_HOST_PLAN", "0") not in ("", "0")


def _early_launch() -> bool:
    """``COMET_EARLY_LAUNCH=0``: queue layer0 only after the host has read the counts (as before session 15). By
    default it is queued before the read, into outputs sized by the largest receive size of the layer's recent
    calls, guarded by the plan's verdict (``kernels/plan.py``): the GPU computes while the host plans."""
    return os.environ.get("COMET_EARLY_LAUNCH", "1") not in ("", "0")


_RECENT_CALLS = 8  # the early launch's row guess: the most rows of this layer's last calls


def _start_copy_to_host(t: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
    """``t`` on the host and, for a CUDA ``t``, the event to wait on before reading it: the copy is queued, so that
    work queued after it (the plan kernel) runs while the host waits."""
    if t.device.type != "cuda":
        return t.to("cpu"), None
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    host.copy_(t, non_blocking=True)
    copied = torch.cuda.Event()
    copied.record(torch.cuda.current_stream(t.device))
    return host, copied


def unavailable_reason(config, ep_group: dist.ProcessGroup | None = None) -> str | None:
    """Why the fused kernels cannot run for ``config`` in this process, or ``None``.

    Every rank of ``ep_group`` reaches the same answer (the one collective here compares hosts).
    """
    if not torch.cuda.is_available():
        return "no CUDA device"
    major, minor = torch.cuda.get_device_capability()
    if major != 9:
        return f"the fused kernels target Hopper GPUs (compute capability 9.x); this GPU is {major}.{minor}"
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed (pip install 'comet-megatron[gpu-cu13]' or '[gpu-cu12]')"
    try:
        importlib.import_module("torch.distributed._symmetric_memory")
    except ImportError:
        return "this torch build has no torch.distributed._symmetric_memory"
    if config.params_dtype != torch.bfloat16:
        return f"the fused kernels compute in bf16; params_dtype is {config.params_dtype} (use --bf16)"
    if config.activation_func not in _SUPPORTED_ACTIVATIONS:
        return f"activation {getattr(config.activation_func, '__name__', config.activation_func)} (fused: silu, gelu)"
    if getattr(config, "activation_func_clamp_value", None) is not None or getattr(config, "glu_linear_offset", 0.0):
        return "activation_func_clamp_value / glu_linear_offset are not fused"
    if ep_group is not None and dist.get_world_size(ep_group) > 1:
        hosts = [None] * dist.get_world_size(ep_group)
        dist.all_gather_object(hosts, socket.gethostname(), group=ep_group)
        if len(set(hosts)) > 1:
            return "the EP group spans several nodes; the fused kernels use NVLink peer memory inside one node"
    return None


def _raise_if_a_wait_gave_up(views, epoch: int) -> None:
    """Debug mode: wait for the kernels, then fail loudly if a spin-wait gave up (see kernels/sync.py)."""
    torch.cuda.synchronize()
    if int(views.error.item()):
        raise RuntimeError(
            f"comet fused kernels: a spin-wait gave up at epoch {epoch} (a peer never published its rows); "
            "all EP ranks must run the same sequence of MoE layer calls"
        )


def _fc2_weight_grad(ctx, w2, grad_y, make_fc2_input, counts, counts_host):
    """fc2's weight gradient (``None`` if not needed), honouring gradient-accumulation fusion. ``grad_y``:
    ``[R, H]`` output-gradient rows; ``make_fc2_input()``: ``[R, F]``, built only when needed."""
    if not ctx.needs_input_grad[3]:
        return None
    return weight_grad(w2, grad_y, make_fc2_input(), counts, counts_host, ctx.weights.fuse_wgrad_into_main_grad)


def _fc1_weight_grad(ctx, w1, grad_fc1_out, x_e, counts, counts_host):
    """fc1's weight gradient (``None`` if not needed), honouring gradient-accumulation fusion.
    ``grad_fc1_out``: ``[R, (2)F]``; ``x_e``: ``[R, H]`` the dispatched rows."""
    if not ctx.needs_input_grad[2]:
        return None
    return weight_grad(w1, grad_fc1_out, x_e, counts, counts_host, ctx.weights.fuse_wgrad_into_main_grad)


def _weight_grad_or_job(
    timer, label, weight, grad_rows, input_rows, counts, counts_host, fuse_into_main_grad, release, defer: bool
):
    """``weight``'s gradient in the fused backward: ``(gradient for autograd, job or None)``.

    A gradient that goes into ``main_grad`` is summed there now (``defer`` false: the accumulation, then the release
    of ``release``, then Megatron's dummy gradient, in that order, as before deferral existed), or comes back as a job
    doing the same later, for :data:`DEFERRED_WEIGHT_GRADS`, with the dummy to return now. One that autograd must
    receive is computed here. ``release``: tensors only this gradient reads, freed once it has run.
    """
    method = accumulation_method(weight, input_rows, fuse_into_main_grad)
    if method is None:
        with timed(timer, label):
            grad = grouped_weight_grad(grad_rows, input_rows, counts, counts_host)
        for tensor in release:
            _release(tensor)
        return grad, None
    accumulate = main_grad_accumulation(method, weight, grad_rows, input_rows, counts, counts_host)

    def job():
        with timed(timer, label):
            accumulate()
        for tensor in release:
            _release(tensor)

    if not defer:
        job()
        return grad_after_main_grad(weight), None
    flops = 2.0 * input_rows.shape[0] * weight.shape[1] * weight.shape[2]
    return grad_after_main_grad(weight), WeightGradJob(job, flops)


def _run_carried_weight_grads(timer, plan, w1: torch.Tensor, w2: torch.Tensor) -> None:
    """In a forward's wait slot (this rank's combine pushed, the reduce not yet queued): as many queued weight
    gradients as the wait this rank can expect, i.e. the forward FLOPs of the rows the busiest rank received beyond
    this rank's (the wait's cause; zero on the busiest rank and at EP=1)."""
    behind = max(plan.recv_rows_per_rank) - plan.recv_rows
    if behind > 0:
        forward_flops_per_row = 2.0 * (w1.shape[1] * w1.shape[2] + w2.shape[1] * w2.shape[2])
        with timed(timer, "fwd.carried_wgrad"):
            DEFERRED_WEIGHT_GRADS.run_within(behind * forward_flops_per_row)


def _rows(tensor: torch.Tensor | None, rows: int) -> torch.Tensor | None:
    return None if tensor is None else tensor[:rows]


def _check_early_inputs(early: EarlyLayer0, x: torch.Tensor, probs: torch.Tensor, fc1: torch.Tensor) -> None:
    """The experts' forward got what the early layer0 launch read (same storage, not modified since)."""
    same = (
        x.data_ptr() == early.tokens.data_ptr()
        and x.shape == early.tokens.shape
        and probs.data_ptr() == early.probs_of_slot.data_ptr()
        and probs.shape == early.probs_of_slot.shape
        and fc1.data_ptr() == early.fc1.data_ptr()
        and (x._version, probs._version, fc1._version) == early.versions
    )
    if not same:
        raise RuntimeError(
            "comet fused MoE: the experts received other tokens, router probabilities or fc1 weights than the token "
            "dispatch, where layer0 was already launched on them (a hook or wrapper between Megatron's dispatch and "
            "experts changed them); set COMET_EARLY_LAUNCH=0 to launch layer0 from the experts' forward"
        )


def _release(tensor: torch.Tensor) -> None:
    """Free a saved activation's memory now rather than when autograd drops the node (Megatron frees its
    pipeline outputs the same way). Later kernels on this stream may reuse the block: stream order keeps
    the kernels already queued on it reading the old contents."""
    tensor.untyped_storage().resize_(0)


@dataclass
class EarlyLayer0:
    """layer0 queued by :meth:`FusedBackend.dispatch` before the counts were read (the plan's verdict said it ran).

    ``act`` / ``preact``: the kernel's outputs, ``[rows guessed, F]`` / ``[rows guessed, (2)F]`` (views of their
    first ``recv_rows`` rows are the results); the inputs it read and their versions, which the experts' forward
    checks: the kernel cannot be taken back once peers have consumed its rows."""

    act: torch.Tensor
    preact: torch.Tensor | None
    tokens: torch.Tensor
    probs_of_slot: torch.Tensor
    probs32: torch.Tensor
    fc1: torch.Tensor
    versions: tuple[int, int, int]


@dataclass
class FusedHandle:
    routing: LocalRouting
    counts: torch.Tensor  # [ep, E] on the device
    counts_host: torch.Tensor
    plan: HostPlan
    config: KernelConfig
    tables: dict[str, torch.Tensor]  # the plan's tables on the device (FusedPlan.device_tables)
    slot_of_token: torch.Tensor  # int64 [T, topk]: the slots of every token (the top-k reduce's gather order)
    epoch: int  # the forward's call number (the early launch, if any, used it already)
    early: EarlyLayer0 | None = None


class FusedBackend(MoEBackend):
    name = "fused"
    fuses_communication = True

    def __init__(self, ep_group: dist.ProcessGroup, num_local_experts: int, config):
        super().__init__(ep_group, num_local_experts)
        self.topk = config.moe_router_topk
        self.ffn = config.moe_ffn_hidden_size
        self.num_experts = config.num_moe_experts
        self.activation_name = _SUPPORTED_ACTIVATIONS[config.activation_func]
        self.gated = bool(config.gated_linear_unit)
        self.num_sms = torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
        self.device_name = torch.cuda.get_device_name()
        self._buffer = None
        self.config_override: KernelConfig | None = None
        self.fused_backward = _fused_backward()  # COMET_FUSED_BACKWARD at construction; settable per layer
        self.defer_gc = _defer_gc()  # COMET_DEFER_GC at construction; settable per layer
        self.host_plan = _host_plan()  # COMET_HOST_PLAN at construction; settable per layer
        self.early_launch = _early_launch()  # COMET_EARLY_LAUNCH at construction; settable per layer
        self.wgrad_defer = wgrad_defer_depth()  # COMET_WGRAD_DEFER at construction; settable per layer
        # COMET_WGRAD_CARRY at construction; settable per layer (then call
        # comet_megatron.megatron.ddp_drain.install_deferred_wgrad_drain(), as CometMoELayer does from the variables)
        self.wgrad_carry = wgrad_carry()
        self._recent_rows: collections.deque[int] = collections.deque(maxlen=_RECENT_CALLS)
        self._gc_deferred = False

    def resume_gc(self) -> None:
        """Turn garbage collection back on if :meth:`dispatch` deferred it (once the first kernel is queued)."""
        if self._gc_deferred:
            self._gc_deferred = False
            gc.enable()

    @property
    def buffer(self):
        if self._buffer is None:
            from comet_megatron.buffer import CometBuffer

            self._buffer = CometBuffer.for_group(self.ep_group)
        return self._buffer

    def shape_key(self, tokens: int, hidden: int) -> ShapeKey:
        return ShapeKey(
            tokens, hidden, self.ffn, self.num_experts, self.topk, self.ep_size, self.device_name, self.num_sms
        )

    def kernel_config(self, tokens: int, hidden: int) -> KernelConfig:
        if self.config_override is not None:
            return self.config_override
        config = choose_config(self.shape_key(tokens, hidden))
        overrides = os.environ.get("COMET_KERNEL_CONFIG")
        if overrides:  # e.g. '{"comm_programs": 24, "num_stages": 4}' - for experiments and tuning runs
            config = dataclasses.replace(config, **json.loads(overrides))
        return config

    def dispatch(
        self,
        tokens: torch.Tensor,
        routing: LocalRouting,
        counts: torch.Tensor,
        weights: ExpertWeights | None = None,
    ) -> Dispatched:
        # Between the counts read (which drains the GPU's queue) and the first kernel the GPU idles for as long as
        # the host works, so everything that does not need the counts is done - and queued on the GPU - before it,
        # layer0 included when its outputs can be sized from this layer's recent calls (the early launch).
        timer = process_timer("fused")  # COMET_LAYER_TIMING: phases of the fused layer, in situ
        self.resume_gc()  # a previous call whose forward never ran must not leave collection off
        if self.defer_gc and gc.isenabled():
            gc.disable()
            self._gc_deferred = True
        config = self.kernel_config(tokens.shape[0], tokens.shape[-1])
        slot_of_token = routing.slot_of_token()
        num_tokens, e_local = tokens.shape[0], self.num_local_experts
        epoch = self.buffer.next_epoch()
        rows_guess = self._early_rows_guess(tokens, weights, config)
        # exact sizes and the collective growth decision: one copy to the host, whose wait drains the GPU's queue
        counts_host, copied = _start_copy_to_host(counts)
        early = verdict = None
        if not self.host_plan:
            # the kernels' tables: built on the GPU while the host waits for the counts and then sizes the workspace
            limits = {}
            if rows_guess is not None:
                views = self.buffer.views
                limits = dict(
                    rows_limit=rows_guess,
                    tokens_limit=self.buffer.tokens_capacity,
                    tiles_limit=views.max_tiles_per_expert,
                )
            tables = device_plan(
                counts,
                self.ep_rank,
                e_local,
                config.block_m,
                num_tokens,
                self.topk,
                own_rows_first=config.own_rows_first,
                **limits,
            )
            if rows_guess is not None:
                verdict, copied = _start_copy_to_host(tables["sizes"][2:])  # queued after the counts' copy
                with timed(timer, "fwd.dispatch_fc1"):
                    early = self._launch_early(tokens, routing, weights, tables, config, epoch, rows_guess)
        with timed(timer, "fwd.counts_sync"):
            if copied is not None:
                copied.synchronize()
        with timed(timer, "fwd.plan"):
            plan = HostPlan(counts_host, self.ep_rank, e_local, self.topk)
            if early is not None and int(verdict[0]) == 1:  # it ran: everything fitted (no growth, tables held)
                views = self.buffer.views
                early.act, early.preact = early.act[: plan.recv_rows], _rows(early.preact, plan.recv_rows)
                self.resume_gc()  # the GPU has layer0 to run while the host goes on
            else:  # not launched, or a no-op: the experts' forward launches layer0 with this same epoch
                early = None
                views = self.buffer.ensure(plan.max_tokens_per_rank, tokens.shape[-1], e_local, self.topk)
                if self.host_plan:
                    plan = build_plan(
                        counts_host,
                        self.ep_rank,
                        e_local,
                        config.block_m,
                        views.max_tiles_per_expert,
                        self.topk,
                        own_rows_first=config.own_rows_first,
                    )
                    # one pinned copy, queued now: no later step (the backward included) needs a host-to-device copy
                    tables = plan.device_tables(tokens.device)
                else:
                    tables = check_device_plan(
                        tables,
                        plan,
                        counts,
                        config.block_m,
                        num_tokens,
                        views.max_tiles_per_expert,
                        own_rows_first=config.own_rows_first,
                    )
            self._recent_rows.append(plan.recv_rows)
        if timer is not None:  # this rank's rows and the busiest rank's: routing imbalance sets the pace
            timer.note("rows", plan.recv_rows)
            timer.note("rows_busiest_rank", max(plan.recv_rows_per_rank))
            timer.note("early_launch", float(early is not None))
        handle = FusedHandle(
            routing=routing,
            counts=counts,
            counts_host=counts_host,
            plan=plan,
            config=config,
            tables=tables,
            slot_of_token=slot_of_token,
            epoch=epoch,
            early=early,
        )
        return Dispatched(
            hidden=tokens, probs=routing.probs_of_slot, tokens_per_expert=plan.tokens_per_expert, handle=handle
        )

    def _early_rows_guess(self, tokens: torch.Tensor, weights: ExpertWeights | None, config: KernelConfig):
        """Rows to size an early layer0 launch by (the most of this layer's recent calls), or ``None`` when it
        cannot be queued before the counts are read: switched off, no weights yet, the host builds the plan, no
        call seen yet, or a workspace that must grow for this rank's own tokens."""
        if not (self.early_launch and weights is not None and self._recent_rows) or self.host_plan:
            return None
        buffer = self.buffer
        if not buffer.fits(tokens.shape[0], tokens.shape[-1], self.num_local_experts, self.topk):
            return None
        return min(max(self._recent_rows), buffer.views.recv.shape[0])

    def layer0(self, tokens, routing, probs, fc1, tables, config, epoch, save_preact, **kwargs):
        """``dispatch_fc1`` of this layer's call (``kwargs``: ``plan``, or ``rows`` and ``guarded``); returns
        ``(probs fp32 [slots], act, preact)``."""
        from comet_megatron import fused_ops

        probs32 = probs.detach().float().contiguous()
        act, preact = fused_ops.dispatch_fc1(
            self.buffer.views,
            kwargs.pop("plan", None),
            tables,
            tokens.contiguous(),
            routing.token_of_slot,
            probs32,
            fc1.detach(),
            epoch=epoch,
            ep_rank=self.ep_rank,
            ep=self.ep_size,
            gated=self.gated,
            activation=self.activation_name,
            config=config,
            grid=config.persistent_grid(self.num_sms),
            debug=_debug(),
            save_preact=save_preact,
            **kwargs,
        )
        return probs32, act, preact

    def _launch_early(self, tokens, routing, weights, tables, config, epoch, rows_guess) -> EarlyLayer0:
        """layer0, guarded by ``tables``' verdict, into outputs of ``rows_guess`` rows."""
        probs = routing.probs_of_slot
        save_preact = torch.is_grad_enabled() and any(
            t.requires_grad for t in (tokens, probs, weights.fc1, weights.fc2)
        )
        probs32, act, preact = self.layer0(
            tokens, routing, probs, weights.fc1, tables, config, epoch, save_preact, rows=rows_guess, guarded=True
        )
        return EarlyLayer0(
            act=act,
            preact=preact,
            tokens=tokens,
            probs_of_slot=probs,
            probs32=probs32,
            fc1=weights.fc1,
            versions=(tokens._version, probs._version, weights.fc1._version),
        )

    def experts(self, dispatched: Dispatched, weights: ExpertWeights) -> torch.Tensor:
        # grad mode as the caller has it (inside Function.forward it is always off, and needs_input_grad reports the
        # inputs' requires_grad even under no_grad, e.g. in the first forward of a reentrant activation checkpoint)
        return _FusedMoE.apply(
            dispatched.hidden,
            dispatched.probs,
            weights.fc1,
            weights.fc2,
            self,
            dispatched.handle,
            weights,
            torch.is_grad_enabled(),
        )

    def combine(self, expert_output: torch.Tensor, handle) -> torch.Tensor:
        return expert_output  # the fused experts already delivered and summed every token's rows


class _FusedMoE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tokens, probs_of_slot, w1, w2, backend: FusedBackend, handle: FusedHandle, weights, grad_enabled):
        from comet_megatron import fused_ops

        DEFERRED_WEIGHT_GRADS.check_nothing_left_over()
        plan, routing = handle.plan, handle.routing
        ep, me, e_local = backend.ep_size, backend.ep_rank, backend.num_local_experts
        config = handle.config
        buffer = backend.buffer
        views = buffer.views
        epoch = handle.epoch
        tables = handle.tables
        debug = _debug()
        needs_grad = grad_enabled and any(ctx.needs_input_grad[:4])
        timer = process_timer("fused")
        early = handle.early
        if early is not None:  # queued by dispatch before the counts read, and it ran
            _check_early_inputs(early, tokens, probs_of_slot, w1)
            if needs_grad and early.preact is None:
                raise RuntimeError(
                    "comet fused MoE: gradients are needed but the token dispatch ran with grad disabled and did not "
                    "keep the fc1 output; set COMET_EARLY_LAUNCH=0"
                )
            probs32, act, preact = early.probs32, early.act, early.preact if needs_grad else None
            handle.early = None  # the outputs belong to this call's autograd graph from here
        else:
            with timed(timer, "fwd.dispatch_fc1"):
                probs32, act, preact = backend.layer0(
                    tokens, routing, probs_of_slot, w1, tables, config, epoch, needs_grad, plan=plan
                )
        backend.resume_gc()  # the GPU has work queued again
        if needs_grad:  # what Megatron's experts keep: dispatched rows (copied before the buffer is reused), fc1 output
            rows = plan.recv_rows
            with timed(timer, "fwd.save"):
                received = views.received(rows, tokens.shape[-1]).clone()
                ctx.save_for_backward(received, views.recv_probs[:rows].clone(), preact, w1, w2)
        with timed(timer, "fwd.fc2_combine"):
            fused_ops.fc2_combine(
                views,
                plan,
                tables,
                act,
                w2.detach(),
                epoch=epoch,
                ep_rank=me,
                ep=ep,
                config=config,
                grid=config.persistent_grid(backend.num_sms),
            )
        if len(DEFERRED_WEIGHT_GRADS):  # weight gradients carried from the previous backward (COMET_WGRAD_CARRY)
            _run_carried_weight_grads(timer, plan, w1, w2)
        with timed(timer, "fwd.reduce"):
            out = fused_ops.combine_reduce(
                views,
                handle.slot_of_token,
                e_local,
                tokens.shape[-1],
                epoch=epoch,
                ep=ep,
                topk=backend.topk,
                debug=debug,
            )
        if debug:
            _raise_if_a_wait_gave_up(views, epoch)
        ctx.backend, ctx.handle, ctx.weights, ctx.probs_dtype = backend, handle, weights, probs_of_slot.dtype
        ctx.probs_of_slot, ctx.hidden = probs32, tokens.shape[-1]
        return out

    @staticmethod
    def backward(ctx, grad_out):
        backend, handle, weights = ctx.backend, ctx.handle, ctx.weights
        x_e, probs_e, preact, w1, w2 = ctx.saved_tensors
        plan, routing = handle.plan, handle.routing
        group, me = backend.ep_group, backend.ep_rank
        rows = plan.recv_rows
        counts_host = plan.tokens_per_expert.tolist()
        counts = handle.tables["tokens_per_expert"]
        if backend.fused_backward:
            return _FusedMoE._fused_backward(ctx, grad_out, counts, counts_host)
        to_expert_major = rank_major_to_expert_major(handle.counts, me, backend.num_local_experts, rows, rotate=True)
        grad_slots = grad_out.contiguous().index_select(0, routing.token_of_slot)
        grad_rank_major = all_to_all(grad_slots, plan.recv_splits, plan.send_splits, group)
        grad_y = grad_rank_major.index_select(0, inverse_permutation(to_expert_major))
        # fc2 input from the saved fc1 output (elementwise), then the activation's backward by autograd
        with torch.enable_grad():
            pre = preact.detach().requires_grad_(True)
            pe = probs_e.detach().to(ctx.probs_dtype).requires_grad_(ctx.needs_input_grad[1])
            fc2_input = weights.activation(pre, pe)
        grad_fc2_input = grouped_mm(grad_y, w2.transpose(-2, -1), counts, counts_host)
        wanted = [t for t in (pre, pe) if t.requires_grad]
        act_grads = dict(zip(map(id, wanted), torch.autograd.grad(fc2_input, wanted, grad_fc2_input)))
        grad_fc1_out, grad_p_e = act_grads[id(pre)], act_grads.get(id(pe))
        grad_w2 = _fc2_weight_grad(ctx, w2, grad_y, fc2_input.detach, counts, counts_host)
        del fc2_input  # before the fc1 gradient is allocated (lower peak)
        grad_w1 = _fc1_weight_grad(ctx, w1, grad_fc1_out, x_e, counts, counts_host)
        grad_tokens = grad_probs = None
        if ctx.needs_input_grad[0]:
            grad_x_e = grouped_mm(grad_fc1_out, w1.transpose(-2, -1), counts, counts_host)
            back = all_to_all(grad_x_e.index_select(0, to_expert_major), plan.send_splits, plan.recv_splits, group)
            grad_tokens = torch.zeros(routing.num_tokens, back.shape[-1], dtype=torch.float32, device=back.device)
            grad_tokens = grad_tokens.index_add_(0, routing.token_of_slot, back.float()).to(grad_out.dtype)
        if grad_p_e is not None:
            grad_probs = all_to_all(
                grad_p_e.index_select(0, to_expert_major), plan.send_splits, plan.recv_splits, group
            )
        return grad_tokens, grad_probs, grad_w1, grad_w2, None, None, None, None

    @staticmethod
    def _fused_backward(ctx, grad_out, counts, counts_host):
        """grad_out dispatch ⊕ fc2-dgrad ⊕ activation backward, fc1-dgrad ⊕ combine push, weight gradients, reduce.

        The router-probability gradients are pushed with the fc1 data-gradient rows to the same owner slots and
        read after the reduce: no separate exchange, so no rank waits there for a busier peer's weight gradients.
        Both weight gradients run after the combine push and before the top-k reduce: a rank with fewer rows
        computes them while the busier rank is still pushing, instead of idling in the reduce. With
        ``wgrad_defer = N`` (``COMET_WGRAD_DEFER``) that slot runs the weight gradients of the MoE layer ``N`` calls
        earlier in this backward pass instead, and this layer's wait there (``comet_megatron/ops/deferred_wgrad.py``,
        which says why that helps and what it costs). Every saved
        activation is freed as soon as its last reader is queued (as autograd frees Megatron's per-op ones); fc1's
        weight gradient goes first so that its large operand (the fc1 output gradient) is gone before fc2's
        weight gradient allocates: without deferral the peak is all weight gradients plus fc2's operands
        ``[R, F + H]``; deferred, the operands live until their job runs.
        """
        from comet_megatron import fused_ops

        if getattr(ctx, "activations_released", False):
            raise RuntimeError(
                "the comet fused MoE backward frees its saved activations as it goes: a second backward through "
                "the same graph (retain_graph=True) is not supported; use --moe-comet-backend reference for that"
            )
        backend, handle, weights = ctx.backend, ctx.handle, ctx.weights
        x_e, probs_e, preact, w1, w2 = ctx.saved_tensors
        plan, routing = handle.plan, handle.routing
        buffer = backend.buffer
        views, epoch, debug = buffer.views, buffer.next_epoch(), _debug()
        common = dict(
            epoch=epoch,
            ep_rank=backend.ep_rank,
            ep=backend.ep_size,
            config=handle.config,
            grid=handle.config.persistent_grid(backend.num_sms),
        )
        timer = process_timer("fused")
        wants_w1, wants_w2 = ctx.needs_input_grad[2], ctx.needs_input_grad[3]
        # the fc2 weight gradient's operand, stored by the activation-backward pass from the loads it makes anyway
        fc2_input = None
        if wants_w2 and not handle.config.dgrad_fused_activation:
            fc2_input = torch.empty(plan.recv_rows, w2.shape[2], dtype=torch.bfloat16, device=preact.device)
        with timed(timer, "bwd.dispatch_dgrad"):
            d_fc1, d_prob = fused_ops.dispatch_dgrad(
                views,
                plan,
                handle.tables,
                grad_out.contiguous().to(torch.bfloat16),
                routing.token_of_slot,
                ctx.probs_of_slot,
                w2.detach(),
                preact,
                gated=backend.gated,
                activation=backend.activation_name,
                debug=debug,
                fc2_input=fc2_input,
                **common,
            )
        grad_y = None
        if wants_w2:
            if fc2_input is None:  # the fused-epilogue dgrad does not store it: from the kept fc1 output
                with timed(timer, "bwd.fc2_input"), torch.no_grad():
                    fc2_input = weights.activation(preact, probs_e.to(preact.dtype))
            # dY stays in the receive buffer only until a peer's next push into it, which may come as soon as this
            # rank's combine push is done, or until the next layer's backward (a deferred weight gradient runs
            # then): the fc2 weight gradient, which runs after that push, reads a copy
            grad_y = views.received(plan.recv_rows, ctx.hidden)
            if backend.ep_size > 1 or backend.wgrad_defer > 0:
                grad_y = grad_y.clone()
        ctx.activations_released = True
        _release(preact)  # (the names stay bound to empty storages)
        wants_probs = ctx.needs_input_grad[1]
        with timed(timer, "bwd.fc1_dgrad_combine"):  # the probability gradients travel with the rows
            fused_ops.fc2_combine(
                views,
                plan,
                handle.tables,
                d_fc1,
                w1.detach(),
                weight_kn=True,
                push_probs=d_prob if wants_probs else None,
                **common,
            )
        fuse, defer = weights.fuse_wgrad_into_main_grad, backend.wgrad_defer > 0
        if not defer and len(DEFERRED_WEIGHT_GRADS):  # queued by layers that defer: before this layer's, in order
            DEFERRED_WEIGHT_GRADS.drain()
        jobs, job = [], None  # weight gradients deferred to a later layer (COMET_WGRAD_DEFER)
        grad_w1 = grad_w2 = None
        if wants_w1:
            grad_w1, job = _weight_grad_or_job(
                timer, "bwd.fc1_wgrad", w1, d_fc1, x_e, counts, counts_host, fuse, release=(d_fc1, x_e), defer=defer
            )
            jobs.append(job)
        else:
            _release(d_fc1)
            _release(x_e)
        if wants_w2:
            # grad_y may be a view of the workspace (EP=1, nothing deferred): never released, only dropped (here, or
            # with its job)
            grad_w2, job = _weight_grad_or_job(
                timer,
                "bwd.fc2_wgrad",
                w2,
                grad_y,
                fc2_input,
                counts,
                counts_host,
                fuse,
                release=(fc2_input,),
                defer=defer,
            )
            jobs.append(job)
            del grad_y, fc2_input
        jobs = [queued for queued in jobs if queued is not None]
        if jobs:
            DEFERRED_WEIGHT_GRADS.submit(jobs, backend.wgrad_defer, backend.wgrad_carry)
        del jobs, job  # the queue holds them (and their operands) now
        with timed(timer, "bwd.reduce"):
            grad_tokens = fused_ops.combine_reduce(
                views,
                handle.slot_of_token,
                backend.num_local_experts,
                ctx.hidden,
                epoch=epoch,
                ep=backend.ep_size,
                topk=backend.topk,
                debug=debug,
            ).to(grad_out.dtype)
        grad_probs = None
        if wants_probs:  # pushed to this rank's slots with the rows the reduce waited for: a copy, no exchange
            grad_probs = views.combine_probs_slots(epoch, routing.num_slots).to(ctx.probs_dtype, copy=True)
        if debug:
            _raise_if_a_wait_gave_up(views, epoch)
        return grad_tokens, grad_probs, grad_w1, grad_w2, None, None, None, None
