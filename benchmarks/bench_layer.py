#!/usr/bin/env python3
"""One expert-parallel MoE layer, several implementations timed side by side in one run.

Variants (same router weights, expert weights and inputs within a case; identical routing):

  megatron         Megatron-Core MoELayer, alltoall dispatcher, experts as Megatron builds them without
                   Transformer Engine (SequentialMLP; the class used is recorded).
  nccl_grouped_mm  Megatron's TopKRouter + NCCL all_to_all dispatch/combine + torch._grouped_mm SwiGLU
                   experts, router probability applied as Megatron does (activation * prob before fc2).
  symm_vdev2d      The same router/experts, dispatch with torch.ops.symm_mem.all_to_all_vdev_2d and
                   combine with all_to_all_vdev_2d_offset over NVSHMEM symmetric memory (backward: the
                   mirror ops). Runs after all other variants (second phase) so that a fault in NVSHMEM
                   cannot take the other measurements with it.
  comet            comet_megatron.CometMoELayer from get_comet_moe_module_spec(backend=--comet-backend).
  comet_torch_bwd  The same layer as "comet" with the PyTorch backward (COMET_FUSED_BACKWARD=0) instead of the
                   fused backward kernels.
  comet_triton_launch  The same layer as "comet" with every Triton kernel launched through Triton's own path
                   (COMET_FAST_LAUNCH=0) instead of comet_megatron/launcher.py's cache (host-cost A/B).
  comet_late_launch  The same layer as "comet" with layer0 queued after the host has read the counts
                   (COMET_EARLY_LAUNCH=0) instead of before it (A/B of the early launch).
  comet_reference  The same with backend="reference" (skipped when "comet" already resolved to it).

Usage (EP size = world size):
  torchrun --nproc-per-node=N benchmarks/bench_layer.py [--cases a,b] [--variants v1,v2] [--tokens T]
           [--fwd-only] [--iters 20] [--warmup 5] [--comet-backend auto|fused|reference] [--out DIR]
           [--router-skew S]   (uneven routing, as in training; results record expert_load_max_over_mean
                                and rank_load_max_over_mean)
  CPU dry run (gloo, fp32, smoke case, symm_vdev2d emulated with gloo all_to_all):
  python -m torch.distributed.run --nproc-per-node 2 benchmarks/bench_layer.py --cpu-smoke --out /tmp/x
  Re-draw the chart of a finished run:  python benchmarks/bench_layer.py --replot DIR/bench_layer_ep2.json

On GPUs the script refuses to run unless NCCL_NVLS_ENABLE=0, TORCH_SYMM_MEM_DISABLE_MULTICAST=1 and
NVSHMEM_DISABLE_NVLS=1 are set (NVLink multicast can take the shared host down); it sets nothing itself.
benchmarks/run_device.sh sets them. Writes <out>/bench_layer_ep{N}.json (after every case) and .png.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import hashlib
import inspect
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback

import torch
import torch.distributed as dist
import torch.nn.functional as F

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIRED_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}
GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Case:
    hidden: int
    ffn: int  # per-expert ffn size (SwiGLU: fc1 has 2 * ffn outputs)
    experts: int
    topk: int
    tokens: int  # per rank


CASES = {
    "smoke": Case(256, 512, 8, 2, 512),
    "mixtral-8x7b": Case(4096, 14336, 8, 2, 8192),
    "qwen1.5-moe-a2.7b": Case(2048, 1408, 60, 4, 8192),
    "qwen2-57b-a14b": Case(3584, 2560, 64, 8, 8192),
    "phi3.5-moe": Case(4096, 6400, 16, 2, 8192),
    "dsv3-like": Case(7168, 2048, 256, 8, 4096),
    # Only on request: many experts per rank (exercises the expert grouping of symm_vdev2d).
    "smoke64": Case(128, 64, 64, 4, 256),
    "qwen3-30b-a3b": Case(2048, 768, 128, 8, 4096),  # the fine-grained training example's layer
}
DEFAULT_CASES = ("smoke", "mixtral-8x7b", "qwen1.5-moe-a2.7b", "qwen2-57b-a14b", "phi3.5-moe", "dsv3-like")
VARIANTS = (
    "megatron",
    "nccl_grouped_mm",
    "symm_vdev2d",
    "comet",
    "comet_triton_launch",
    "comet_late_launch",
    "comet_torch_bwd",
    "comet_reference",
)
PHASE2 = ("symm_vdev2d",)
PHASE1 = tuple(v for v in VARIANTS if v not in PHASE2)
COMET_LAYER_VARIANTS = ("comet", "comet_triton_launch", "comet_late_launch", "comet_torch_bwd", "comet_reference")
# set while the variant runs (COMET_FAST_LAUNCH is read at every launch, COMET_EARLY_LAUNCH when the layer is built)
VARIANT_ENV = {"comet_triton_launch": {"COMET_FAST_LAUNCH": "0"}, "comet_late_launch": {"COMET_EARLY_LAUNCH": "0"}}
VDEV_MAX_GROUPS = 16  # all_to_all_vdev_2d: experts per rank <= NUM_TILES = 512 / 32 (torch <= 2.13)
VDEV_MAX_WORLD = 16  # all_to_all_vdev_2d_offset: world_size <= NUM_TILES

DESCRIPTIONS = {
    "megatron": "Megatron-Core MoELayer, alltoall dispatcher, experts built by get_moe_module_spec(use_te=False, "
    "moe_grouped_gemm=False) (SequentialMLP without TE)",
    "nccl_grouped_mm": "Megatron TopKRouter; NCCL all_to_all of rows and probs (counts exchanged by all_to_all, one "
    "host sync); torch._grouped_mm fc1 -> silu(gate)*up*prob -> fc2; NCCL all_to_all back; bf16 index_add over top-k",
    "symm_vdev2d": "Megatron TopKRouter; counts all_gather (one host sync for the received-row count); rows and probs "
    "copied into NVSHMEM symmetric buffers, torch.ops.symm_mem.all_to_all_vdev_2d (local experts coalesced into <=16 "
    "contiguous groups, op limit) -> gather to expert-major -> torch._grouped_mm SwiGLU -> scatter -> "
    "all_to_all_vdev_2d_offset back; backward = the mirror ops",
    "comet": "comet_megatron CometMoELayer from get_comet_moe_module_spec(use_te=False, backend=--comet-backend)",
    "comet_triton_launch": "the 'comet' layer with Triton's own launch path for every kernel (COMET_FAST_LAUNCH=0)",
    "comet_late_launch": "the 'comet' layer with layer0 launched after the counts read (COMET_EARLY_LAUNCH=0)",
    "comet_torch_bwd": "the 'comet' layer with the PyTorch backward: NCCL all_to_all + torch grouped GEMMs",
    "comet_reference": "comet_megatron CometMoELayer, backend='reference' (pure PyTorch EP)",
}


# --------------------------------------------------------------------------------------------------------------
# process environment


@dataclasses.dataclass
class Env:
    rank: int
    ws: int
    local_rank: int
    cpu: bool
    dev: torch.device
    dtype: torch.dtype
    args: argparse.Namespace

    @property
    def cuda(self) -> bool:
        return not self.cpu


def log0(env: Env | None, *msg) -> None:
    if env is None or env.rank == 0:
        print(*msg, flush=True)


def check_required_env() -> None:
    bad = {k: os.environ.get(k) for k, v in REQUIRED_ENV.items() if os.environ.get(k) != v}
    if bad:
        want = " ".join(f"{k}={v}" for k, v in REQUIRED_ENV.items())
        have = ", ".join(f"{k}={v!r}" for k, v in bad.items())
        print(
            f"bench_layer.py: refusing to run on GPUs: NVLink multicast must be off (it can take the shared host "
            f"down). Set {want} in the environment (benchmarks/run_device.sh does). Wrong or missing: {have}",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(2)


def sync(env: Env) -> None:
    if env.cuda:
        torch.cuda.synchronize()


def max_over_ranks(value: float, env: Env) -> float:
    t = torch.tensor([float(value)], dtype=torch.float64, device=env.dev)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def mean_over_ranks(value: float, env: Env) -> float:
    t = torch.tensor([float(value)], dtype=torch.float64, device=env.dev)
    dist.all_reduce(t)
    return float(t.item()) / env.ws


def all_ranks_ok(ok: bool, env: Env) -> bool:
    t = torch.tensor([1 if ok else 0], dtype=torch.int64, device=env.dev)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def elapsed_ms(fn, env: Env) -> float:
    """Milliseconds from before ``fn()`` is queued until its work is done: CUDA events on GPU, the host clock on CPU."""
    if env.cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def bench_ms(fn, env: Env, iters: int, warmup: int, back_to_back: bool = False) -> float:
    """Max over ranks of the median over ``iters`` calls, each started from an idle GPU after a barrier (so a call
    whose host work outlasts its kernels is timed at its host pace); CUDA events on GPU.

    ``back_to_back``: the mean per call of ``iters`` calls queued one after another after one barrier, as a training
    step runs its layers: the host runs ahead of the GPU wherever the call does not wait for the GPU itself."""
    for _ in range(warmup):
        fn()
    sync(env)
    dist.barrier()
    if back_to_back:

        def calls():
            for _ in range(iters):
                fn()

        return max_over_ranks(elapsed_ms(calls, env) / iters, env)
    times = []
    for _ in range(iters):
        dist.barrier()
        times.append(elapsed_ms(fn, env))
    return max_over_ranks(statistics.median(times), env)


def free_memory(env: Env) -> None:
    gc.collect()
    if env.cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def short_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text[:400]


# --------------------------------------------------------------------------------------------------------------
# floors


def measure_floors(env: Env) -> dict:
    out: dict = {}
    iters, warm = max(env.args.iters, 10), 3
    try:
        n = 512 if env.cpu else 8192
        a = torch.randn(n, n, device=env.dev, dtype=env.dtype)
        b = torch.randn_like(a)
        ms = bench_ms(lambda: a @ b, env, iters, warm)
        out["dense_matmul_shape"] = [n, n, n]
        out["dense_TFLOPs"] = round(2 * n**3 / (ms * 1e-3) / 1e12, 2)
        a = b = None
    except Exception as exc:  # noqa: BLE001
        out["dense_TFLOPs"] = f"FAIL {short_error(exc)}"
    if env.ws > 1:
        try:
            numel = (1 if env.cpu else 128) * 1024 * 1024
            x = torch.randn(numel, device=env.dev, dtype=env.dtype)
            y = torch.empty_like(x)
            ms = bench_ms(lambda: dist.all_to_all_single(y, x), env, iters, warm)
            out["nccl_a2a_GBps"] = round(numel * x.element_size() * (env.ws - 1) / env.ws / (ms * 1e-3) / 1e9, 1)
            x = y = None
        except Exception as exc:  # noqa: BLE001
            out["nccl_a2a_GBps"] = f"FAIL {short_error(exc)}"
        if env.cuda:
            try:
                out["symm_peer_copy_GBps"] = measure_symm_copy(env, iters, warm)
            except Exception as exc:  # noqa: BLE001
                out["symm_peer_copy_GBps"] = f"FAIL {short_error(exc)}"
    free_memory(env)
    peer = out.get("symm_peer_copy_GBps")
    if isinstance(peer, float):
        out["peer_GBps_used"], out["peer_GBps_source"] = peer, "symm_peer_copy_GBps"
    elif isinstance(out.get("nccl_a2a_GBps"), float):
        out["peer_GBps_used"], out["peer_GBps_source"] = out["nccl_a2a_GBps"], "nccl_a2a_GBps"
    else:
        out["peer_GBps_used"], out["peer_GBps_source"] = None, None
    return out


_KEEP_ALIVE: list = []  # symmetric buffers stay allocated until exit (no collective frees mid-run)


def symm_module():
    import torch.distributed._symmetric_memory as symm_mem

    return symm_mem


def measure_symm_copy(env: Env, iters: int, warm: int) -> float:
    """A bulk read of the peer's symmetric buffer (get_buffer + copy_), like probe_rowcomm.py."""
    symm_mem = symm_module()
    rows, cols = 16384, 4096
    buf = symm_mem.empty(rows, cols, dtype=torch.bfloat16, device=env.dev)
    buf.normal_()
    handle = symm_mem.rendezvous(buf, dist.group.WORLD.group_name)
    _KEEP_ALIVE.extend([buf, handle])
    peer = (env.rank + 1) % env.ws
    remote = handle.get_buffer(peer, (rows, cols), torch.bfloat16)
    out = torch.empty(rows, cols, dtype=torch.bfloat16, device=env.dev)
    ms = bench_ms(lambda: out.copy_(remote), env, iters, warm)
    return round(rows * cols * 2 / (ms * 1e-3) / 1e9, 1)


def case_floors(case: Case, env: Env, floors: dict) -> dict:
    tokens = case.tokens
    flops_fwd = tokens * case.topk * 6 * case.hidden * case.ffn
    bytes_fwd = 2 * tokens * case.topk * (env.ws - 1) / env.ws * case.hidden * 2
    peak = floors.get("dense_TFLOPs")
    bw = floors.get("peer_GBps_used")
    res = {
        "flops_fwd": flops_fwd,
        "flops_fwdbwd": 3 * flops_fwd,
        "comm_bytes_fwd": bytes_fwd,
        "comm_bytes_fwdbwd": 2 * bytes_fwd,
    }
    for tag, mult_f, mult_b in (("fwd", 1, 1), ("fwdbwd", 3, 2)):
        gemm = flops_fwd * mult_f / (peak * 1e12) * 1e3 if isinstance(peak, float) else None
        if isinstance(bw, float) and bw > 0:
            comm = bytes_fwd * mult_b / (bw * 1e9) * 1e3
        else:
            comm = 0.0 if env.ws == 1 else None
        res[f"gemm_floor_{tag}_ms"] = None if gemm is None else round(gemm, 4)
        res[f"comm_floor_{tag}_ms"] = None if comm is None else round(comm, 4)
        known = [v for v in (gemm, comm) if v is not None]
        res[f"floor_{tag}_ms"] = round(max(known), 4) if known else None
    return res


# --------------------------------------------------------------------------------------------------------------
# Megatron setup, weights, routing


def init_megatron(env: Env) -> None:
    from megatron.core import parallel_state as ps

    ps.initialize_model_parallel(
        tensor_model_parallel_size=1,
        expert_model_parallel_size=env.ws,
        distributed_timeout_minutes=max(1, math.ceil(env.args.timeout_s / 60)),
    )
    if env.cuda:
        from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed

        model_parallel_cuda_manual_seed(123)


def megatron_config(case: Case, env: Env):
    from megatron.core.transformer.transformer_config import TransformerConfig

    kwargs = dict(
        num_layers=1,
        hidden_size=case.hidden,
        ffn_hidden_size=case.ffn,
        moe_ffn_hidden_size=case.ffn,
        num_attention_heads=16,
        num_moe_experts=case.experts,
        moe_router_topk=case.topk,
        moe_token_dispatcher_type="alltoall",
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        bf16=env.cuda,
        params_dtype=env.dtype,
        expert_model_parallel_size=env.ws,
        moe_router_load_balancing_type="none",
        moe_aux_loss_coeff=0.0,
        moe_router_dtype="fp32",
        perform_initialization=False,  # every variant gets the bench's own seeded weights
        use_cpu_initialization=env.cpu,
    )
    if env.cpu:
        kwargs["bias_activation_fusion"] = False
    names = {f.name for f in dataclasses.fields(TransformerConfig)}
    return TransformerConfig(**{k: v for k, v in kwargs.items() if k in names})


def build_from_spec(spec, config):
    from megatron.core.transformer.spec_utils import ModuleSpec, build_module

    if isinstance(spec, ModuleSpec):
        return build_module(spec, config=config)
    return spec(config=config)  # megatron-core >= 0.19: functools.partial(MoELayer, submodules=...)


def build_router(config, env: Env):
    from megatron.core.transformer.moe.moe_utils import get_default_pg_collection
    from megatron.core.transformer.moe.router import TopKRouter

    params = inspect.signature(TopKRouter.__init__).parameters
    kwargs = {"config": config}
    if "pg_collection" in params:
        kwargs["pg_collection"] = get_default_pg_collection()
    return TopKRouter(**kwargs).to(env.dev)


class CaseData:
    """Seeded inputs and weights of one case; every variant loads exactly these."""

    def __init__(self, index: int, name: str, case: Case, env: Env):
        self.index, self.name, self.case, self.env = index, name, case, env
        self.local_experts = case.experts // env.ws
        self.first_expert = env.rank * self.local_experts
        gen = torch.Generator(device="cpu").manual_seed(7000 + index)  # same on every rank
        self.router_weight = torch.randn(case.experts, case.hidden, generator=gen) / math.sqrt(case.hidden)
        self.x = self._normal((case.tokens, 1, case.hidden), 1.0, 11)
        skew = getattr(env.args, "router_skew", 0.0)
        if skew:
            # Training's routing is uneven (aux loss 1.0-2.4 in the 2-GPU runs): one input direction u, present
            # in every token, raises expert e's logit by skew * (1 - e / (E - 1)): expert 0 hottest.
            u = torch.randn(case.hidden, generator=gen)
            u /= u.norm()
            profile = torch.linspace(1.0, 0.0, case.experts)
            self.router_weight += skew * profile[:, None] * u[None, :]
            self.x += u.to(device=self.x.device, dtype=self.x.dtype)
        self.dy = self._normal((case.tokens, 1, case.hidden), 1.0, 13)

    def _generator(self, *parts: int) -> torch.Generator:
        seed = 1_000_003 * self.index + 10_007 * self.env.rank
        for i, p in enumerate(parts):
            seed = seed * 31 + (i + 1) * 97 + p
        return torch.Generator(device=self.env.dev).manual_seed(seed % (2**62))

    def _normal(self, shape, std: float, *parts: int) -> torch.Tensor:
        t = torch.empty(shape, dtype=self.env.dtype, device=self.env.dev)
        return t.normal_(0.0, std, generator=self._generator(*parts))

    def expert(self, e: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Local expert ``e``: fc1 ``[2F, H]`` (``[gate | up]``) and fc2 ``[H, F]`` (distinct per rank)."""
        c = self.case
        g = self._generator(101, e)
        w1 = torch.empty(2 * c.ffn, c.hidden, dtype=self.env.dtype, device=self.env.dev)
        w1.normal_(0.0, 1.0 / math.sqrt(c.hidden), generator=g)
        w2 = torch.empty(c.hidden, c.ffn, dtype=self.env.dtype, device=self.env.dev)
        w2.normal_(0.0, 1.0 / math.sqrt(c.ffn), generator=g)
        return w1, w2

    @torch.no_grad()
    def load_router(self, router) -> None:
        router.weight.copy_(self.router_weight.to(device=router.weight.device, dtype=router.weight.dtype))

    @torch.no_grad()
    def load_experts(self, experts) -> None:
        if hasattr(experts, "local_experts"):  # Megatron SequentialMLP
            for e, mlp in enumerate(experts.local_experts):
                w1, w2 = self.expert(e)
                mlp.linear_fc1.weight.copy_(w1)
                mlp.linear_fc2.weight.copy_(w2)
        elif experts.linear_fc1.weight.dim() == 3:  # stacked [E_local, out, in] (CometGroupedMLP)
            for e in range(self.local_experts):
                w1, w2 = self.expert(e)
                experts.linear_fc1.weight[e].copy_(w1)
                experts.linear_fc2.weight[e].copy_(w2)
        else:
            raise TypeError(f"cannot load weights into {type(experts).__name__}")

    def stacked_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.case
        w1 = torch.empty(self.local_experts, 2 * c.ffn, c.hidden, dtype=self.env.dtype, device=self.env.dev)
        w2 = torch.empty(self.local_experts, c.hidden, c.ffn, dtype=self.env.dtype, device=self.env.dev)
        with torch.no_grad():
            for e in range(self.local_experts):
                a, b = self.expert(e)
                w1[e].copy_(a)
                w2[e].copy_(b)
        return w1, w2


def route_slots(routing_map: torch.Tensor, probs: torch.Tensor, topk: int):
    """Slots of Megatron's router output in Megatron's permute order (expert-major, token ascending).

    Returns ``(token_of_slot [T*k], prob_of_slot [T*k] (autograd to the router), counts [E] int64)``.
    """
    top_e = torch.topk(routing_map.to(torch.float32), topk, dim=1).indices  # exactly the k True entries
    top_p = probs.gather(1, top_e)
    flat_e = top_e.reshape(-1)
    order = torch.argsort(flat_e, stable=True)
    token_of_slot = torch.div(order, topk, rounding_mode="floor")
    prob_of_slot = top_p.reshape(-1).index_select(0, order)
    counts = torch.bincount(flat_e, minlength=routing_map.shape[1]).to(torch.int64)
    return token_of_slot, prob_of_slot, counts


def exclusive_cumsum(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return torch.cumsum(x, dim=dim) - x


def segment_gather_index(seg_len: torch.Tensor, seg_base: torch.Tensor, total: int) -> torch.Tensor:
    """Row index of a concatenation of segments: segment ``i`` is rows ``seg_base[i] .. + seg_len[i]``."""
    seg = torch.repeat_interleave(torch.arange(seg_len.numel(), device=seg_len.device), seg_len, output_size=total)
    within = torch.arange(total, device=seg_len.device) - exclusive_cumsum(seg_len)[seg]
    return seg_base[seg] + within


def grouped_linear(x: torch.Tensor, w: torch.Tensor, offs: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """``x [N, in]`` (expert segments) times ``w [E, out, in]`` per segment."""
    if x.is_cuda:
        return torch._grouped_mm(x, w.transpose(-2, -1), offs=offs)
    parts = [seg @ w[e].t() for e, seg in enumerate(torch.split(x, counts))]
    return torch.cat(parts) if parts else x.new_empty(0, w.shape[1])


def swiglu_experts(x, probs, w1, w2, offs, counts):
    """Megatron's expert MLP: fc1 -> silu(gate) * up -> * prob (fp32 product, cast back) -> fc2."""
    h = grouped_linear(x, w1, offs, counts)
    gate, up = torch.chunk(h, 2, dim=-1)
    act = F.silu(gate) * up
    act = (act * probs.unsqueeze(-1)).to(act.dtype)
    return grouped_linear(act, w2, offs, counts)


# --------------------------------------------------------------------------------------------------------------
# (b) NCCL all_to_all + torch._grouped_mm


class NcclGroupedMoE(torch.nn.Module):
    def __init__(self, config, data: CaseData, env: Env):
        super().__init__()
        self.env, self.case = env, data.case
        self.local_experts = data.local_experts
        self.router = build_router(config, env)
        data.load_router(self.router)
        w1, w2 = data.stacked_weights()
        self.w1, self.w2 = torch.nn.Parameter(w1), torch.nn.Parameter(w2)
        self.last_tokens_per_expert: list[int] | None = None

    def _a2a(self, x, out_splits, in_splits):
        if self.env.ws == 1:
            return x
        from torch.distributed.nn.functional import all_to_all_single

        out = x.new_empty((sum(out_splits),) + tuple(x.shape[1:]))
        return all_to_all_single(out, x.contiguous(), out_splits, in_splits)

    def forward(self, hidden):
        shape, c, ws, el = hidden.shape, self.case, self.env.ws, self.local_experts
        x = hidden.reshape(-1, c.hidden)
        probs, routing_map = self.router(hidden)
        tok, p_slot, counts = route_slots(routing_map, probs, c.topk)
        recv = torch.empty_like(counts)
        if ws > 1:
            dist.all_to_all_single(recv, counts)  # recv[s * el + e]: rows from rank s for my local expert e
        else:
            recv.copy_(counts)
        host = torch.stack([counts, recv]).tolist()  # the one host sync
        send_splits = [sum(host[0][d * el : (d + 1) * el]) for d in range(ws)]
        rc = [host[1][s * el : (s + 1) * el] for s in range(ws)]
        recv_splits = [sum(r) for r in rc]
        per_expert = [sum(rc[s][e] for s in range(ws)) for e in range(el)]
        total = sum(recv_splits)
        self.last_tokens_per_expert = per_expert

        xr = self._a2a(x.index_select(0, tok), recv_splits, send_splits)
        pr = self._a2a(p_slot, recv_splits, send_splits)
        rc_dev = torch.tensor(rc, dtype=torch.int64, device=x.device)  # [src, expert]
        rank_major_start = exclusive_cumsum(rc_dev.reshape(-1)).view(ws, el)
        to_expert_major = segment_gather_index(rc_dev.t().reshape(-1), rank_major_start.t().reshape(-1), total)
        offs = torch.cumsum(rc_dev.sum(0), 0).to(torch.int32)
        y = swiglu_experts(
            xr.index_select(0, to_expert_major),
            pr.index_select(0, to_expert_major),
            self.w1,
            self.w2,
            offs,
            per_expert,
        )
        back = torch.empty_like(to_expert_major)
        back[to_expert_major] = torch.arange(total, device=x.device)
        yb = self._a2a(y.index_select(0, back), send_splits, recv_splits)
        out = torch.zeros(x.shape[0], c.hidden, dtype=yb.dtype, device=x.device).index_add(0, tok, yb)
        return out.view(shape), None


# --------------------------------------------------------------------------------------------------------------
# (c) torch symmetric memory all_to_all_vdev_2d


def vdev_groups(local_experts: int) -> int:
    """Largest divisor of the local expert count that the vdev_2d op accepts as 'experts per rank'."""
    return max(g for g in range(1, min(local_experts, VDEV_MAX_GROUPS) + 1) if local_experts % g == 0)


def vdev_sizes(case: Case, ws: int) -> dict:
    el = case.experts // ws
    groups = vdev_groups(el)
    max_in = case.tokens * case.topk
    # worst case rows for my experts + one padding row per empty group (major_align=1 pads empty bins to 1)
    max_out = ws * case.tokens * min(case.topk, el) + groups
    return {"groups": groups, "max_in": max_in, "max_out": max_out, "nsplits": ws * groups, "hidden": case.hidden}


class SymmBuffers:
    """Flat symmetric buffers, allocated once for the largest case; per-case views start at offset 0."""

    NAMES_X = ("x_send", "x_recv", "x_back_in", "x_back_out")
    NAMES_P = ("p_send", "p_recv", "p_back_in", "p_back_out")
    NAMES_OSO = ("oso_x", "oso_p", "oso_c", "oso_cb", "oso_xb", "oso_pb")

    def __init__(self, env: Env, sizes: list[dict]):
        self.env = env
        self.group_name = dist.group.WORLD.group_name
        in_x = max(s["max_in"] * s["hidden"] for s in sizes)
        out_x = max(s["max_out"] * s["hidden"] for s in sizes)
        in_rows = max(s["max_in"] for s in sizes)
        out_rows = max(s["max_out"] for s in sizes)
        ns = max(s["nsplits"] for s in sizes)
        if env.cuda:
            symm_mem = symm_module()
            try:
                symm_mem.enable_symm_mem_for_group(self.group_name)
            except Exception:  # noqa: BLE001 - deprecated/absent in some versions
                pass
        self.flat = {}
        plan = [
            ("x_send", in_x, env.dtype),
            ("x_recv", out_x, env.dtype),
            ("x_back_in", out_x, env.dtype),
            ("x_back_out", in_x, env.dtype),
            ("p_send", in_rows, torch.float32),
            ("p_recv", out_rows, torch.float32),
            ("p_back_in", out_rows, torch.float32),
            ("p_back_out", in_rows, torch.float32),
            ("in_splits", ns, torch.int64),
        ] + [(n, 2 * ns, torch.int64) for n in self.NAMES_OSO]
        for name, numel, dtype in plan:
            self.flat[name] = self._alloc(numel, dtype)
        self.bytes = sum(t.numel() * t.element_size() for t in self.flat.values())

    def _alloc(self, numel: int, dtype: torch.dtype) -> torch.Tensor:
        if self.env.cpu:
            return torch.zeros(numel, dtype=dtype)
        symm_mem = symm_module()
        t = symm_mem.empty(numel, dtype=dtype, device=self.env.dev)
        t.zero_()
        symm_mem.rendezvous(t, self.group_name)
        _KEEP_ALIVE.append(t)
        return t

    def views(self, s: dict) -> dict:
        h, ns = s["hidden"], s["nsplits"]
        v = {}
        for name in self.NAMES_X:
            rows = s["max_in"] if name in ("x_send", "x_back_out") else s["max_out"]
            v[name] = self.flat[name][: rows * h].view(rows, h)
        for name in self.NAMES_P:
            rows = s["max_in"] if name in ("p_send", "p_back_out") else s["max_out"]
            v[name] = self.flat[name][:rows].view(rows, 1)
        v["in_splits"] = self.flat["in_splits"][:ns]
        for name in self.NAMES_OSO:
            v[name] = self.flat[name][: 2 * ns].view(2, ns)
        return v


class VdevComm:
    """The two ops, real (CUDA, NVSHMEM) or emulated with gloo all_to_all (CPU dry run, same layouts)."""

    def __init__(self, env: Env, group_name: str):
        self.env, self.group_name = env, group_name

    def vdev_2d(self, inp, out, in_splits, oso):
        if self.env.cuda:
            torch.ops.symm_mem.all_to_all_vdev_2d(inp, out, in_splits, oso, self.group_name)
        else:
            self._emulate_2d(inp, out, in_splits, oso, major_align=1)

    def vdev_2d_offset(self, inp, out, in_splits_offsets, oso):
        if self.env.cuda:
            torch.ops.symm_mem.all_to_all_vdev_2d_offset(inp, out, in_splits_offsets, oso, self.group_name)
        else:
            self._emulate_2d_offset(inp, out, in_splits_offsets, oso)

    def _emulate_2d(self, inp, out, in_splits, oso, major_align):
        """Input chunks (dest rank, group) contiguous from row 0 -> output chunks (group, src rank); each
        group's tile padded to a multiple of major_align (empty tile: major_align rows)."""
        ws = self.env.ws
        ne = in_splits.numel() // ws
        splits = in_splits.view(ws, ne)  # [dest, group]
        recv_counts = torch.empty_like(splits)
        dist.all_to_all_single(recv_counts, splits.contiguous())  # [src, group]
        send_rows = splits.sum(1).tolist()
        recv_rows = recv_counts.sum(1).tolist()
        recv = inp.new_empty((sum(recv_rows),) + tuple(inp.shape[1:]))
        dist.all_to_all_single(recv, inp[: sum(send_rows)].contiguous(), recv_rows, send_rows)
        out_splits = recv_counts.t().contiguous()  # [group, src]
        tile = out_splits.sum(1)
        aligned = torch.clamp((tile + major_align - 1) // major_align * major_align, min=major_align)
        offsets = (exclusive_cumsum(aligned).unsqueeze(1) + exclusive_cumsum(out_splits, dim=1)).contiguous()
        pos = 0
        counts_host, offsets_host = recv_counts.tolist(), offsets.tolist()
        for src in range(ws):
            for g in range(ne):
                n = counts_host[src][g]
                o = offsets_host[g][src]
                out[o : o + n] = recv[pos : pos + n]
                pos += n
        oso[0].copy_(out_splits.reshape(-1))
        oso[1].copy_(offsets.reshape(-1))

    def _emulate_2d_offset(self, inp, out, in_so, oso):
        """Input chunks (group, dest rank) at given offsets -> output chunks (src rank, group) packed from 0."""
        ws = self.env.ws
        ne = in_so.shape[1] // ws
        splits = in_so[0].view(ne, ws)
        offs = in_so[1].view(ne, ws)
        send_counts = splits.t().contiguous()  # [dest, group]
        recv_counts = torch.empty_like(send_counts)
        dist.all_to_all_single(recv_counts, send_counts)  # [src, group]
        sh, oh = splits.tolist(), offs.tolist()
        chunks = [inp[oh[g][d] : oh[g][d] + sh[g][d]] for d in range(ws) for g in range(ne)]
        send = torch.cat(chunks) if chunks else inp[:0]
        send_rows = send_counts.sum(1).tolist()
        recv_rows = recv_counts.sum(1).tolist()
        recv = inp.new_empty((sum(recv_rows),) + tuple(inp.shape[1:]))
        dist.all_to_all_single(recv, send.contiguous(), recv_rows, send_rows)
        out[: recv.shape[0]] = recv
        flat = recv_counts.reshape(-1)
        oso[0].copy_(flat)
        oso[1].copy_(exclusive_cumsum(flat))


@dataclasses.dataclass
class VdevPlan:
    v: dict  # buffer views of this case
    tok: torch.Tensor  # token of each slot (send order)
    n_send: int
    n_tokens: int
    hidden: int
    counts_local: torch.Tensor  # [ws, E_local] rows from each source rank for my local experts
    pre: torch.Tensor  # [ws, E_local] row of each expert inside its (group, source) chunk
    total_recv: int
    groups: int
    per_group: int
    recv_index: torch.Tensor | None = None


def vdev_recv_index(plan: VdevPlan, oso: torch.Tensor, ws: int) -> torch.Tensor:
    """Row of every expert-major (expert, source, slot) row in the op's (group, source)-chunked output."""
    chunk_start = oso[1].view(plan.groups, ws)  # output chunk g * ws + s
    base = chunk_start.t().repeat_interleave(plan.per_group, dim=1) + plan.pre  # [src, expert]
    return segment_gather_index(plan.counts_local.t().reshape(-1), base.t().reshape(-1), plan.total_recv)


class _VdevDispatch(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p_slot, plan: VdevPlan, comm: VdevComm):
        v, n = plan.v, plan.n_send
        torch.index_select(x, 0, plan.tok, out=v["x_send"][:n])
        v["p_send"][:n, 0].copy_(p_slot)
        comm.vdev_2d(v["x_send"], v["x_recv"], v["in_splits"], v["oso_x"])
        comm.vdev_2d(v["p_send"], v["p_recv"], v["in_splits"], v["oso_p"])
        plan.recv_index = vdev_recv_index(plan, v["oso_x"], comm.env.ws)
        ctx.plan, ctx.comm, ctx.x_dtype = plan, comm, x.dtype
        return v["x_recv"].index_select(0, plan.recv_index), v["p_recv"][:, 0].index_select(0, plan.recv_index)

    @staticmethod
    def backward(ctx, grad_x, grad_p):
        plan, comm = ctx.plan, ctx.comm
        v, n = plan.v, plan.n_send
        gx = gp = None
        if ctx.needs_input_grad[0]:
            v["x_back_in"].index_copy_(0, plan.recv_index, grad_x.to(ctx.x_dtype).contiguous())
            comm.vdev_2d_offset(v["x_back_in"], v["x_back_out"], v["oso_x"], v["oso_xb"])
            gx = torch.zeros(plan.n_tokens, plan.hidden, dtype=ctx.x_dtype, device=grad_x.device)
            gx.index_add_(0, plan.tok, v["x_back_out"][:n])
        if ctx.needs_input_grad[1]:
            v["p_back_in"][:, 0].index_copy_(0, plan.recv_index, grad_p.float().contiguous())
            comm.vdev_2d_offset(v["p_back_in"], v["p_back_out"], v["oso_p"], v["oso_pb"])
            gp = v["p_back_out"][:n, 0].clone()
        return gx, gp, None, None


class _VdevCombine(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, plan: VdevPlan, comm: VdevComm):
        v, n = plan.v, plan.n_send
        v["x_back_in"].index_copy_(0, plan.recv_index, y.contiguous())
        comm.vdev_2d_offset(v["x_back_in"], v["x_back_out"], v["oso_x"], v["oso_c"])
        out = torch.zeros(plan.n_tokens, plan.hidden, dtype=y.dtype, device=y.device)
        out.index_add_(0, plan.tok, v["x_back_out"][:n])
        ctx.plan, ctx.comm = plan, comm
        return out

    @staticmethod
    def backward(ctx, grad_out):
        plan, comm = ctx.plan, ctx.comm
        v, n = plan.v, plan.n_send
        torch.index_select(grad_out.contiguous(), 0, plan.tok, out=v["x_send"][:n])
        comm.vdev_2d(v["x_send"], v["x_recv"], v["in_splits"], v["oso_cb"])
        index = vdev_recv_index(plan, v["oso_cb"], comm.env.ws)
        return v["x_recv"].index_select(0, index), None, None


class SymmVdevMoE(torch.nn.Module):
    def __init__(self, config, data: CaseData, env: Env, buffers: SymmBuffers):
        super().__init__()
        self.env, self.case = env, data.case
        self.local_experts = data.local_experts
        self.sizes = vdev_sizes(data.case, env.ws)
        self.groups = self.sizes["groups"]
        self.per_group = self.local_experts // self.groups
        self.views = buffers.views(self.sizes)
        self.comm = VdevComm(env, buffers.group_name)
        self.router = build_router(config, env)
        data.load_router(self.router)
        w1, w2 = data.stacked_weights()
        self.w1, self.w2 = torch.nn.Parameter(w1), torch.nn.Parameter(w2)
        self.last_tokens_per_expert: list[int] | None = None

    def forward(self, hidden):
        shape, c, ws, el = hidden.shape, self.case, self.env.ws, self.local_experts
        x = hidden.reshape(-1, c.hidden)
        probs, routing_map = self.router(hidden)
        tok, p_slot, counts = route_slots(routing_map, probs, c.topk)
        parts = [torch.empty_like(counts) for _ in range(ws)]
        dist.all_gather(parts, counts)
        first = self.env.rank * el
        counts_local = torch.stack(parts)[:, first : first + el].contiguous()  # [src, expert]
        per_expert = [sum(col) for col in zip(*counts_local.tolist())]  # the one host sync
        total = sum(per_expert)
        if total + self.groups > self.sizes["max_out"]:
            raise RuntimeError(f"receive buffer too small: {total} rows + padding > {self.sizes['max_out']}")
        self.last_tokens_per_expert = per_expert
        v = self.views
        v["in_splits"].copy_(counts.view(ws, self.groups, self.per_group).sum(-1).reshape(-1))
        grouped = counts_local.view(ws, self.groups, self.per_group)
        plan = VdevPlan(
            v=v,
            tok=tok,
            n_send=tok.numel(),
            n_tokens=x.shape[0],
            hidden=c.hidden,
            counts_local=counts_local,
            pre=exclusive_cumsum(grouped, dim=2).reshape(ws, el),
            total_recv=total,
            groups=self.groups,
            per_group=self.per_group,
        )
        xe, pe = _VdevDispatch.apply(x, p_slot, plan, self.comm)
        offs = torch.cumsum(counts_local.sum(0), 0).to(torch.int32)
        y = swiglu_experts(xe, pe, self.w1, self.w2, offs, per_expert)
        out = _VdevCombine.apply(y, plan, self.comm)
        return out.view(shape), None


# --------------------------------------------------------------------------------------------------------------
# running one variant


def experts_tokens_hook(store: dict):
    def hook(module, args, kwargs):
        tpe = args[1] if len(args) > 1 else kwargs.get("tokens_per_expert")
        if tpe is not None:
            store["tokens_per_expert"] = [int(t) for t in torch.as_tensor(tpe).reshape(-1).tolist()]

    return hook


# comet_cfg<i>: the 'comet' layer with --comet-configs[i] over its kernel config, or with --tune the tuner's candidate i
SWEEP_PREFIX = "comet_cfg"


def sweep_index(name: str) -> int:
    return int(name[len(SWEEP_PREFIX) :])


def sweep_config(name: str, env: Env, base):
    """The kernel config of sweep variant ``name`` (``None`` for other variants) over the case's current choice
    ``base``: with --tune the tuner's candidate ``i`` for ``base``, else ``base`` with --comet-configs[i] applied."""
    if not name.startswith(SWEEP_PREFIX):
        return None
    index = sweep_index(name)
    if env.args.tune:
        from comet_megatron.tuning import candidate_configs

        return candidate_configs(base, torch.cuda.get_device_properties(env.dev).multi_processor_count)[index]
    return dataclasses.replace(base, **env.args.comet_configs[index])


def sweep_description(name: str, env: Env) -> str:
    index = sweep_index(name)
    if env.args.tune:
        which = "its current choice" if index == 0 else f"the tuner's candidate {index} for its current choice"
        return f"the 'comet' layer with {which} (tuning.candidate_configs; the case's kernel_config has it)"
    return f"the 'comet' layer with KernelConfig overrides {env.args.comet_configs[index]}"


def build_variant(name: str, data: CaseData, env: Env, ctx: dict):
    """Build variant ``name`` with this case's weights; returns ``(module, info dict)``."""
    config = megatron_config(data.case, env)
    info: dict = {}
    if name.startswith(SWEEP_PREFIX):
        layer, info = build_variant("comet", data, env, ctx)
        backend = layer.comet_backend
        if not hasattr(backend, "kernel_config"):
            raise RuntimeError(f"{name}: --comet-configs and --tune need the fused backend, got {backend.name!r}")
        tokens, hidden = data.x.numel() // data.x.shape[-1], data.x.shape[-1]
        backend.config_override = sweep_config(name, env, backend.kernel_config(tokens, hidden))
        info["kernel_config"] = dataclasses.asdict(backend.config_override)
        info["shape_key"] = dataclasses.asdict(backend.shape_key(tokens, hidden))  # where --tune stores the winner
        return layer, info
    if name == "megatron":
        from megatron.core.models.gpt.moe_module_specs import get_moe_module_spec

        spec = get_moe_module_spec(use_te=False, num_experts=data.case.experts, moe_grouped_gemm=False)
        layer = build_from_spec(spec, config).to(env.dev)
        data.load_router(layer.router)
        data.load_experts(layer.experts)
        info["experts_class"] = type(layer.experts).__name__
        info["dispatcher_class"] = type(layer.token_dispatcher).__name__
        return layer, info
    if name in COMET_LAYER_VARIANTS:
        from comet_megatron.megatron import get_comet_moe_module_spec

        backend = "reference" if name == "comet_reference" else env.args.comet_backend
        spec = get_comet_moe_module_spec(use_te=False, num_experts=data.case.experts, backend=backend)
        layer = build_from_spec(spec, config).to(env.dev)
        data.load_router(layer.router)
        data.load_experts(layer.experts)
        info["backend_requested"] = backend
        info["backend_resolved"] = layer.comet_backend.name
        if hasattr(layer.comet_backend, "fused_backward"):
            # "comet": the backward the backend chose (COMET_FUSED_BACKWARD); "comet_torch_bwd": PyTorch's
            if name == "comet_torch_bwd":
                layer.comet_backend.fused_backward = False
            info["fused_backward"] = layer.comet_backend.fused_backward
        info["experts_class"] = type(layer.experts).__name__
        return layer, info
    if name == "nccl_grouped_mm":
        return NcclGroupedMoE(config, data, env), info
    if name == "symm_vdev2d":
        layer = SymmVdevMoE(config, data, env, ctx["symm_buffers"])
        info.update(
            expert_groups_per_rank=layer.groups,
            experts_per_group=layer.per_group,
            backward="all_to_all_vdev_2d_offset / all_to_all_vdev_2d mirrors",
            emulated=env.cpu,
        )
        return layer, info
    raise ValueError(name)


def profile_kernels(fn, env: Env, iters: int, top: int = 16, trace_path: str | None = None) -> dict:
    """GPU time per kernel name (ms per call of ``fn``, this rank) over ``iters`` profiled calls, largest first;
    ``_all`` is the sum over every kernel (overlapping kernels count twice). On CPU: operator self time.
    ``trace_path``: also record the host side and write rank 0's Chrome trace there (gzipped)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CUDA] if env.cuda else []
    if not env.cuda or trace_path:
        activities.append(ProfilerActivity.CPU)
    fn()
    sync(env)
    with profile(activities=activities) as prof:
        for _ in range(iters):
            fn()
        sync(env)
    if trace_path and env.rank == 0:
        import gzip
        import shutil

        prof.export_chrome_trace(trace_path)
        with open(trace_path, "rb") as src, gzip.open(trace_path + ".gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.remove(trace_path)
    totals: dict[str, float] = {}
    for evt in prof.key_averages():
        if env.cuda:
            if evt.device_type != torch.autograd.DeviceType.CUDA:
                continue
            us = getattr(evt, "self_device_time_total", None)
            if us is None:
                us = evt.self_cuda_time_total
        else:
            us = evt.self_cpu_time_total
        key = evt.key[:100]
        totals[key] = totals.get(key, 0.0) + us
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])
    out = {k: round(us / 1000 / iters, 3) for k, us in ranked[:top] if us > 0}
    out["_all"] = round(sum(totals.values()) / 1000 / iters, 3)
    return out


def host_profile(fn, env: Env, iters: int, label: str, top: int = 25) -> float:
    """Host milliseconds per call of ``fn`` over ``iters`` calls under cProfile (device synced after each call, so
    the counts read inside does not wait for earlier calls); prints rank 0's top functions by own time."""
    import cProfile
    import io
    import pstats

    fn()
    sync(env)
    profiler = cProfile.Profile()
    start = time.perf_counter()
    for _ in range(iters):
        sync(env)
        profiler.enable()
        fn()
        profiler.disable()
    sync(env)
    per_call = (time.perf_counter() - start) * 1e3 / iters
    if env.rank == 0:
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats("tottime").print_stats(top)
        log0(env, f"host profile {label}: {iters} forward calls\n" + text.getvalue())
    return round(per_call, 3)


def rel_err(y: torch.Tensor, ref: torch.Tensor, env: Env) -> float:
    d = (y.double() - ref.double()).pow(2).sum()
    r = ref.double().pow(2).sum()
    t = torch.stack([d, r]).to(env.dev)
    dist.all_reduce(t)
    return math.sqrt(t[0].item()) / max(math.sqrt(t[1].item()), 1e-30)


def run_variant(name: str, data: CaseData, env: Env, ctx: dict, ref: dict | None) -> dict:
    args = env.args
    layer, info = build_variant(name, data, env, ctx)
    res: dict = dict(info)
    layer.train()
    params = [p for p in layer.parameters() if p.requires_grad]
    x, dy = data.x, data.dy
    xg = x.detach().clone().requires_grad_(True)

    # correctness + routing, before any timing
    seen: dict = {}
    handle = None
    if hasattr(layer, "experts"):
        handle = layer.experts.register_forward_pre_hook(experts_tokens_hook(seen), with_kwargs=True)
    try:
        with torch.no_grad():
            y = layer(x)[0].detach()
    finally:
        if handle is not None:
            handle.remove()
    tpe = seen.get("tokens_per_expert") or getattr(layer, "last_tokens_per_expert", None)
    res["finite"] = bool(all_ranks_ok(bool(torch.isfinite(y).all()), env))
    if tpe:  # routing balance the timing ran under: the busiest local expert against the mean, over ranks
        loads = [float(t) for t in tpe]
        res["expert_load_max_over_mean"] = round(max_over_ranks(max(loads) / max(sum(loads) / len(loads), 1.0), env), 3)
        # and between ranks (the skew of --router-skew heats the first experts, i.e. the first rank's)
        rows = sum(loads)
        res["rank_load_max_over_mean"] = round(max_over_ranks(rows, env) / max(mean_over_ranks(rows, env), 1.0), 3)
    if name == "megatron":
        ctx["ref_out"] = y.cpu()
        ctx["ref_tpe"] = tpe
    elif ref is not None and ref.get("ref_out") is not None:
        res["rel_err_vs_megatron"] = rel_err(y, ref["ref_out"].to(env.dev), env)
        res["rel_err_flag"] = res["rel_err_vs_megatron"] > 2e-2
        if tpe is not None and ref.get("ref_tpe") is not None:
            res["routing_equal_megatron"] = all_ranks_ok(list(tpe) == list(ref["ref_tpe"]), env)
    del y

    def fwd():
        layer(xg)

    def fwdbwd():
        for p in params:
            p.grad = None
        xg.grad = None
        layer(xg)[0].backward(dy)

    res["fwd_ms"] = round(bench_ms(fwd, env, args.iters, args.warmup, args.back_to_back), 4)
    if not args.fwd_only:
        try:
            res["fwdbwd_ms"] = round(bench_ms(fwdbwd, env, args.iters, args.warmup, args.back_to_back), 4)
        except Exception as exc:  # noqa: BLE001
            res["fwdbwd_ms"] = f"FAIL {short_error(exc)}"
            if env.rank == 0:
                traceback.print_exc()
    backward_ok = not args.fwd_only and not isinstance(res.get("fwdbwd_ms"), str)
    if args.host_profile:
        res["host_profile_fwd_ms"] = host_profile(fwd, env, args.host_profile, f"{data.name} {name}")
    if args.profile_kernels:
        trace = os.path.join(args.trace_dir, f"trace_{data.name}_{name}.json") if args.trace_dir else None
        res["kernels_ms"] = profile_kernels(fwdbwd if backward_ok else fwd, env, args.profile_kernels, trace_path=trace)
        res["kernels_scope"] = "fwd+bwd" if backward_ok else "fwd"
    # one more fwd+bwd: peak memory (GPU) and the gradients' agreement with Megatron
    for p in params:
        p.grad = None
    xg.grad = None
    free_memory(env)
    if env.cuda:
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    if backward_ok:
        fwdbwd()
    else:
        fwd()
    if env.cuda:
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / GIB
        res["peak_GiB"] = round(max_over_ranks(peak, env), 3)
        res["static_GiB"] = round(max_over_ranks(base / GIB, env), 3)
        res["peak_scope"] = "fwd+bwd" if backward_ok else "fwd"
    if backward_ok:
        router = getattr(layer, "router", None)
        grads = {"dx": xg.grad, "router_grad": getattr(getattr(router, "weight", None), "grad", None)}
        if name == "megatron":
            ctx["ref_grads"] = {k: None if g is None else g.detach().cpu() for k, g in grads.items()}
        elif ref is not None and ref.get("ref_grads"):
            for key, g in grads.items():
                r = ref["ref_grads"].get(key)
                if g is not None and r is not None and g.shape == r.shape:
                    res[f"rel_err_{key}_vs_megatron"] = rel_err(g, r.to(env.dev), env)
            errs = [v for k, v in res.items() if k.startswith("rel_err_") and k.endswith("_vs_megatron")]
            res["rel_err_flag"] = any(e > 2e-2 for e in errs)
    for p in params:
        p.grad = None
    xg.grad = None
    return res


def run_variant_safe(name: str, data: CaseData, env: Env, ctx: dict, ref: dict | None) -> dict | str:
    ok, result = True, None
    variant_env = VARIANT_ENV.get(name, {})
    saved_env = {k: os.environ.get(k) for k in variant_env}
    os.environ.update(variant_env)
    try:
        result = run_variant(name, data, env, ctx, ref)
    except Exception as exc:  # noqa: BLE001
        ok, result = False, f"FAIL {short_error(exc)}"
        if env.rank == 0:
            traceback.print_exc()
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        free_memory(env)  # the variant's locals are gone now
    except Exception as exc:  # noqa: BLE001
        if ok:
            ok, result = False, f"FAIL after the run: {short_error(exc)}"
    if not all_ranks_ok(ok, env) and ok:
        result = "FAIL on another rank (see its traceback)"
    return result


# --------------------------------------------------------------------------------------------------------------
# reporting


def finalize_case(entry: dict) -> None:
    floor = entry.get("floor", {})
    variants = entry.get("variants", {})
    mega = variants.get("megatron") if isinstance(variants.get("megatron"), dict) else {}
    for res in variants.values():
        if not isinstance(res, dict):
            continue
        for tag in ("fwd", "fwdbwd"):
            t = res.get(f"{tag}_ms")
            f = floor.get(f"floor_{tag}_ms")
            if isinstance(t, float) and isinstance(f, float) and f > 0:
                res[f"x_floor_{tag}"] = round(t / f, 3)
            m = mega.get(f"{tag}_ms")
            if isinstance(t, float) and isinstance(m, float) and t > 0:
                res[f"speedup_{tag}_vs_megatron"] = round(m / t, 3)


def fmt(v, spec: str = ".2f") -> str:
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


def case_line(name: str, entry: dict, variants: tuple) -> str:
    if isinstance(entry.get("skipped"), str):
        return f"{name}: {entry['skipped']}"
    parts = []
    for v in variants:
        r = entry.get("variants", {}).get(v)
        if r is None:
            continue
        if isinstance(r, str):
            parts.append(f"{v} {r[:80]}")
        else:
            parts.append(f"{v} {fmt(r.get('fwd_ms'))}/{fmt(r.get('fwdbwd_ms'))} ms")
    fl = entry.get("floor", {})
    return f"{name} [floor {fmt(fl.get('floor_fwd_ms'))}/{fmt(fl.get('floor_fwdbwd_ms'))} ms]: " + " | ".join(parts)


def table(results: dict) -> str:
    head = (
        f"{'case':<18} {'variant':<19} {'fwd ms':>8} {'f+b ms':>8} {'x-floor f/fb':>13} "
        f"{'vs mega f/fb':>13} {'peak GiB':>8} {'max err':>8}"
    )
    lines = [head, "-" * len(head)]
    for cname, entry in results["cases"].items():
        if isinstance(entry.get("skipped"), str):
            lines.append(f"{cname:<18} {entry['skipped']}")
            continue
        fl = entry.get("floor", {})
        lines.append(f"{cname:<18} {'floor':<19} {fmt(fl.get('floor_fwd_ms')):>8} {fmt(fl.get('floor_fwdbwd_ms')):>8}")
        for vname, r in entry.get("variants", {}).items():
            if isinstance(r, str):
                lines.append(f"{'':<18} {vname:<19} {r[:90]}")
                continue
            xf = f"{fmt(r.get('x_floor_fwd'))}/{fmt(r.get('x_floor_fwdbwd'))}"
            sp = f"{fmt(r.get('speedup_fwd_vs_megatron'))}/{fmt(r.get('speedup_fwdbwd_vs_megatron'))}"
            errs = [v for k, v in r.items() if k.startswith("rel_err_") and isinstance(v, float)]
            err = fmt(max(errs), ".1e") if errs else "-"
            if r.get("rel_err_flag"):
                err += "!"
            lines.append(
                f"{'':<18} {vname:<19} {fmt(r.get('fwd_ms')):>8} {fmt(r.get('fwdbwd_ms')):>8} {xf:>13} {sp:>13} "
                f"{fmt(r.get('peak_GiB')):>8} {err:>8}"
            )
    return "\n".join(lines)


def kernel_tables(results: dict) -> str:
    """Per case and variant, the profiled kernels (rank 0): ms per call, largest first."""
    lines = []
    for cname, entry in results["cases"].items():
        for vname, r in entry.get("variants", {}).items():
            kernels = r.get("kernels_ms") if isinstance(r, dict) else None
            if not kernels:
                continue
            lines.append(f"{cname} / {vname}: kernels, ms per {r.get('kernels_scope')} call (all: {kernels['_all']})")
            lines += [f"  {ms:8.3f}  {name}" for name, ms in kernels.items() if name != "_all"]
    return "\n".join(lines)


def plot(results: dict, path: str) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no chart written"
    cases = [c for c, e in results["cases"].items() if not isinstance(e.get("skipped"), str)]
    # this version's variants in their order, then any other names an older results file holds
    names = list(VARIANTS) + sorted({v for c in cases for v in results["cases"][c]["variants"]} - set(VARIANTS))
    variants = [v for v in names if any(isinstance(results["cases"][c]["variants"].get(v), dict) for c in cases)]
    if not cases or not variants:
        return "nothing to plot"
    fig, axes = plt.subplots(2, 1, figsize=(max(9, 2.2 * len(cases) + 2), 9))
    width = 0.8 / len(variants)
    for ax, tag, title in ((axes[0], "fwd", "forward"), (axes[1], "fwdbwd", "forward + backward")):
        for i, v in enumerate(variants):
            xs, ys = [], []
            for j, c in enumerate(cases):
                r = results["cases"][c]["variants"].get(v)
                t = r.get(f"{tag}_ms") if isinstance(r, dict) else None
                if isinstance(t, float):
                    xs.append(j - 0.4 + (i + 0.5) * width)
                    ys.append(t)
            ax.bar(xs, ys, width=width, label=v)
        for j, c in enumerate(cases):
            f = results["cases"][c].get("floor", {}).get(f"floor_{tag}_ms")
            if isinstance(f, float) and f > 0:
                ax.hlines(f, j - 0.45, j + 0.45, colors="black", linestyles="--", label="floor" if j == 0 else None)
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels(cases, rotation=15)
        ax.set_yscale("log")
        ax.set_ylabel("ms (log)")
        b2b = results["meta"].get("args", {}).get("back_to_back")
        mode = ", calls back to back" if b2b else ""
        ax.set_title(f"{title}, EP={results['meta'].get('ep')}, {results['meta'].get('device')}{mode}")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"chart written: {path}"


def versions(env: Env) -> dict:
    v = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda}
    try:
        import triton

        v["triton"] = triton.__version__
    except Exception:  # noqa: BLE001
        v["triton"] = None
    try:
        from megatron.core import package_info

        v["megatron_core"] = package_info.__version__
    except Exception:  # noqa: BLE001
        v["megatron_core"] = None
    try:
        import comet_megatron

        v["comet_megatron"] = comet_megatron.__version__
    except Exception:  # noqa: BLE001
        v["comet_megatron"] = None
    if env.cuda:
        try:
            v["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
        except Exception:  # noqa: BLE001
            v["nccl"] = None
    try:
        v["git_commit"] = (
            subprocess.run(
                ["git", "-C", REPO_ROOT, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or None
        )
    except Exception:  # noqa: BLE001
        v["git_commit"] = None
    # a copy of the working tree (the device machines get one) may carry a stale .git: the digest of the code itself
    # identifies what ran
    v["source_sha256"] = source_digest(REPO_ROOT)
    return v


def source_digest(root: str) -> str:
    """sha256 over the package's and kernels' Python sources (relative path + bytes, sorted by path)."""
    digest = hashlib.sha256()
    for top in ("comet_megatron", "kernels"):
        base = os.path.join(root, top)
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__", "kernels"))
            for name in sorted(f for f in filenames if f.endswith(".py")):
                path = os.path.join(dirpath, name)
                digest.update(os.path.relpath(path, root).encode() + b"\0")
                with open(path, "rb") as f:
                    digest.update(f.read())
    return digest.hexdigest()


def write_json(results: dict, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1, default=str)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------------------
# main


def parse_comet_configs(parser: argparse.ArgumentParser, text: str | None) -> list[dict]:
    if not text:
        return []
    from comet_megatron.tuning import KernelConfig

    try:
        configs = json.loads(text)
    except ValueError as exc:
        parser.error(f"--comet-configs is not JSON ({exc}); pass a list of objects such as '[{{\"num_stages\": 3}}]'")
    if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
        parser.error("--comet-configs must be a JSON list of objects (KernelConfig field overrides)")
    fields = {f.name for f in dataclasses.fields(KernelConfig)}
    for c in configs:
        unknown = sorted(set(c) - fields)
        if unknown:
            parser.error(f"--comet-configs: unknown KernelConfig field(s) {unknown}; fields: {sorted(fields)}")
        try:
            dataclasses.replace(KernelConfig(), **c)
        except ValueError as exc:
            parser.error(f"--comet-configs: {c} is not a valid kernel configuration: {exc}")
    return configs


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--cases", default=None, help=f"comma list of {', '.join(CASES)} (default: {','.join(DEFAULT_CASES)})"
    )
    p.add_argument("--variants", default=None, help=f"comma list of {', '.join(VARIANTS)} (default: all)")
    p.add_argument("--tokens", type=int, default=None, help="tokens per rank for every case (default: per case)")
    p.add_argument("--fwd-only", action="store_true", help="time the forward pass only")
    p.add_argument(
        "--router-skew",
        type=float,
        default=0.0,
        help="uneven routing: raise expert e's router logit by SKEW*(1-e/(E-1)) (0: the random router, about even)",
    )
    p.add_argument("--iters", type=int, default=None, help="timed iterations per measurement (default 20; CPU 3)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up iterations (default 5; CPU 1)")
    p.add_argument(
        "--back-to-back",
        action="store_true",
        help="time each variant's calls queued back to back (mean per call; the host runs ahead of the GPU as in a "
        "training step) instead of one call at a time from an idle GPU (median); results go to "
        "bench_layer_ep<N>_b2b.{json,png}",
    )
    p.add_argument(
        "--comet-backend",
        default=None,
        choices=("auto", "fused", "reference"),
        help="backend of the 'comet' variant (default auto; CPU reference)",
    )
    p.add_argument(
        "--profile-kernels",
        type=int,
        default=0,
        metavar="N",
        help="after timing, profile N more fwd+bwd calls per variant and record GPU ms per kernel name (rank 0 "
        "printed; 0: off)",
    )
    p.add_argument(
        "--host-profile",
        type=int,
        default=0,
        metavar="N",
        help="after timing, run N more forward calls per variant under cProfile and print rank 0's top host "
        "functions (what the GPU waits for after a host sync; 0: off)",
    )
    p.add_argument(
        "--trace-dir",
        default=None,
        help="with --profile-kernels: also write rank 0's Chrome trace (host and GPU) per case and variant here",
    )
    p.add_argument(
        "--comet-configs",
        default=None,
        metavar="JSON",
        help="kernel-config sweep: a JSON list of KernelConfig overrides, e.g. '[{\"fc2_block_n\": 256}]'; "
        f"each adds a variant {SWEEP_PREFIX}<i> (the 'comet' layer with that override)",
    )
    p.add_argument(
        "--tune",
        action="store_true",
        help="fill Comet's tuning cache (COMET_TUNING_CACHE, --moe-comet-tuning-cache): time the tuner's candidate "
        "kernel configurations and the current choice (cached, else the default) as comet_cfg<i> variants of every "
        "case, fwd+bwd, max over ranks, and store each case's fastest under the key the fused backend looks up "
        "(tokens per rank = the case's or --tokens: tune at your training's seq x micro-batch). GPUs only",
    )
    p.add_argument("--out", default=None, help="output folder (default $OUT, else ./benchmarks/results)")
    p.add_argument("--timeout-s", type=int, default=300, help="process-group timeout (a hung collective aborts)")
    p.add_argument("--cpu-smoke", action="store_true", help="CPU dry run: gloo, fp32, smoke case, few iterations")
    p.add_argument("--replot", default=None, metavar="JSON", help="only redraw the chart of a results file")
    args = p.parse_args(argv)
    if args.cases is None:
        args.cases = ["smoke"] if args.cpu_smoke else list(DEFAULT_CASES)
    else:
        args.cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        p.error(f"unknown case(s) {unknown}; choose from {', '.join(CASES)}")
    args.variants = list(VARIANTS) if args.variants is None else [v for v in args.variants.split(",") if v]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)  # comet_megatron from this checkout when it is not installed
    args.comet_configs = parse_comet_configs(p, args.comet_configs)
    if args.tune:
        if args.cpu_smoke:
            p.error("--tune times the fused kernels: it needs GPUs, not --cpu-smoke")
        if args.comet_configs:
            p.error("--tune makes its own comet_cfg<i> variants (the tuner's candidates); drop --comet-configs")
        from comet_megatron.tuning import CANDIDATE_COUNT

        sweeps = CANDIDATE_COUNT  # comet_cfg0 is the current choice; the rest follow it (tuning.candidate_configs)
    else:
        sweeps = len(args.comet_configs)
    args.variants += [f"{SWEEP_PREFIX}{i}" for i in range(sweeps)]
    if args.iters is None:
        args.iters = 3 if args.cpu_smoke else 20
    if args.warmup is None:
        args.warmup = 1 if args.cpu_smoke else 5
    if args.comet_backend is None:
        args.comet_backend = "reference" if args.cpu_smoke else "auto"
    if args.out is None:
        args.out = os.environ.get("OUT") or os.path.join(os.getcwd(), "benchmarks", "results")
    return args


def setup(args) -> Env:
    rank = int(os.environ.get("RANK", "0"))
    ws = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    timeout = datetime.timedelta(seconds=args.timeout_s)
    if args.cpu_smoke:
        if REPO_ROOT not in sys.path:
            sys.path.insert(0, REPO_ROOT)
        from tests.megatron_cpu import apply_cpu_shims

        apply_cpu_shims()
        torch.set_num_threads(max(1, min(4, (os.cpu_count() or 2) // max(ws, 1))))
        dist.init_process_group("gloo", timeout=timeout)
        return Env(rank, ws, local_rank, True, torch.device("cpu"), torch.float32, args)
    if not torch.cuda.is_available():
        print("bench_layer.py: no CUDA device; use --cpu-smoke for a CPU dry run", file=sys.stderr)
        sys.exit(2)
    torch.cuda.set_device(local_rank)
    dev = torch.device("cuda", local_rank)
    dist.init_process_group("nccl", device_id=dev, timeout=timeout)
    return Env(rank, ws, local_rank, False, dev, torch.bfloat16, args)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.replot:
        with open(args.replot) as f:
            print(plot(json.load(f), os.path.splitext(args.replot)[0] + ".png"))
        return
    if not args.cpu_smoke:
        check_required_env()
    else:
        print(
            "bench_layer.py: --cpu-smoke (gloo, fp32); the NVLS environment check applies to GPU runs only", flush=True
        )
    env = setup(args)
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)  # comet_megatron from this checkout when it is not installed
    os.makedirs(args.out, exist_ok=True)
    if args.trace_dir:
        os.makedirs(args.trace_dir, exist_ok=True)
    stem = f"bench_layer_ep{env.ws}" + ("_b2b" if args.back_to_back else "")
    json_path, png_path = os.path.join(args.out, f"{stem}.json"), os.path.join(args.out, f"{stem}.png")

    symm_backend = None
    if env.cuda and env.ws > 1:  # the peer-copy floor and symm_vdev2d use NVSHMEM-backed symmetric memory
        try:
            symm_mem = symm_module()
            if symm_mem.is_nvshmem_available():
                symm_mem.set_backend("NVSHMEM")
                symm_backend = "NVSHMEM"
            else:
                symm_backend = "default (NVSHMEM not available)"
        except Exception as exc:  # noqa: BLE001
            symm_backend = f"FAIL {short_error(exc)}"

    cases = {}
    for name in args.cases:
        c = CASES[name]
        cases[name] = dataclasses.replace(c, tokens=args.tokens) if args.tokens else c
    results: dict = {
        "meta": {
            "ep": env.ws,
            "device": torch.cuda.get_device_name(env.dev) if env.cuda else f"cpu ({platform.processor() or 'cpu'})",
            "mode": "cpu-smoke (gloo, fp32; symm_vdev2d emulated with gloo all_to_all)" if env.cpu else "cuda bf16",
            "dtype": str(env.dtype).replace("torch.", ""),
            "versions": versions(env),
            "args": {k: v for k, v in vars(args).items()},
            "env": {k: os.environ.get(k) for k in (*REQUIRED_ENV, "NVSHMEM_SYMMETRIC_SIZE", "CUDA_VISIBLE_DEVICES")},
            "symm_mem_backend": symm_backend,
            "timing": (
                f"mean per call of {args.iters} calls queued back to back after {args.warmup} warm-up and one barrier"
                if args.back_to_back
                else f"median of {args.iters} iterations after {args.warmup} warm-up, barrier before each"
            )
            + ", max over ranks; "
            + ("CUDA events" if env.cuda else "time.perf_counter")
            + "; floors' rates: median of isolated calls",
            "fwd_definition": "training-mode forward (autograd on, input requires grad, graph discarded)",
            "fwdbwd_definition": "param/input grads set to None, forward, backward(dy) with a fixed random dy",
            "peak_definition": "torch.cuda.max_memory_allocated delta over one fwd+bwd after reset (excludes "
            "weights and persistent buffers, see static_GiB; symm_vdev2d's symmetric buffers are in "
            "symm_buffers_GiB)",
            "floor_definition": "max(GEMM FLOPs / dense_TFLOPs, dispatch+combine bytes / peer_GBps_used); "
            "fwd FLOPs = T*k*6*H*F, fwd+bwd = 3x; bytes fwd = 2*T*k*(ws-1)/ws*H*2, fwd+bwd = 2x",
            "variants": {v: DESCRIPTIONS.get(v) or sweep_description(v, env) for v in args.variants},
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        },
        "cases": {},
    }
    log0(
        env,
        f"bench_layer: EP={env.ws} device={results['meta']['device']} torch={torch.__version__} "
        f"megatron-core={results['meta']['versions'].get('megatron_core')} cases={list(cases)} "
        f"variants={args.variants}",
    )

    floors = measure_floors(env)
    results["floors"] = floors
    log0(env, "floors", json.dumps(floors))

    try:
        init_megatron(env)
    except Exception as exc:  # noqa: BLE001
        results["megatron_init"] = f"FAIL {short_error(exc)}"
        log0(env, "Megatron initialisation failed:", results["megatron_init"])
        if env.rank == 0:
            traceback.print_exc()

    ctxs: dict = {}
    active = []
    for index, (name, case) in enumerate(cases.items()):
        entry = {"config": dataclasses.asdict(case), "variants": {}}
        results["cases"][name] = entry
        if case.experts % env.ws:
            entry["skipped"] = "skipped: experts not divisible by EP"
            continue
        entry["config"]["local_experts"] = case.experts // env.ws
        entry["floor"] = case_floors(case, env, floors)
        active.append((index, name, case))

    def run_phase(phase: tuple, buffers=None) -> None:
        for index, name, case in active:
            wanted = [v for v in phase if v in args.variants]
            if not wanted:
                continue
            entry = results["cases"][name]
            ctx = ctxs.setdefault(name, {"symm_buffers": buffers})
            ctx["symm_buffers"] = buffers
            try:
                data = CaseData(index, name, case, env)
            except Exception as exc:  # noqa: BLE001
                for v in wanted:
                    entry["variants"][v] = f"FAIL inputs: {short_error(exc)}"
                continue
            for v in wanted:
                needs_megatron = ("megatron", *COMET_LAYER_VARIANTS)
                if "megatron_init" in results and (v in needs_megatron or v.startswith(SWEEP_PREFIX)):
                    entry["variants"][v] = "FAIL Megatron initialisation failed"
                    continue
                if v in ("comet_reference", "comet_torch_bwd"):
                    prev = entry["variants"].get("comet")
                    if isinstance(prev, dict) and prev.get("backend_resolved") == "reference":
                        entry["variants"][v] = "skipped: 'comet' already resolved to the reference backend"
                        continue
                if v == "symm_vdev2d":
                    reason = symm_skip_reason(env, case, buffers)
                    if reason:
                        entry["variants"][v] = reason
                        continue
                ref = ctx if v != "megatron" else None
                t0 = time.time()
                entry["variants"][v] = run_variant_safe(v, data, env, ctx, ref)
                if isinstance(entry["variants"][v], dict):
                    entry["variants"][v]["wall_s"] = round(time.time() - t0, 1)
            del data
            free_memory(env)
            finalize_case(entry)
            log0(env, case_line(name, entry, tuple(wanted)))
            if env.rank == 0:
                write_json(results, json_path)

    run_phase(PHASE1 + tuple(v for v in args.variants if v.startswith(SWEEP_PREFIX)))
    if "symm_vdev2d" in args.variants and active:
        buffers = None
        sizes = [vdev_sizes(c, env.ws) for _, _, c in active if symm_skip_reason(env, c, "probe") is None]
        if sizes:
            try:
                buffers = SymmBuffers(env, sizes)
                results["symm_buffers_GiB"] = round(buffers.bytes / GIB, 3)
            except Exception as exc:  # noqa: BLE001
                buffers = f"FAIL symmetric buffers: {short_error(exc)}"
                if env.rank == 0:
                    traceback.print_exc()
            if not all_ranks_ok(not isinstance(buffers, str), env) and not isinstance(buffers, str):
                buffers = "FAIL symmetric buffers on another rank"
        run_phase(PHASE2, buffers)

    if args.tune and env.rank == 0:
        for name in cases:
            entry = results["cases"][name]
            entry["tuned"] = store_tuned(name, entry, "fwd_ms" if args.fwd_only else "fwdbwd_ms")
            log0(env, f"tuned {name}: {json.dumps(entry['tuned'])}")
    results["meta"]["finished"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    if env.rank == 0:
        write_json(results, json_path)
        if args.profile_kernels:
            print("\n" + kernel_tables(results), flush=True)
        print("\n" + table(results), flush=True)
        print(f"\njson written: {json_path}", flush=True)
        try:
            print(plot(results, png_path), flush=True)
        except Exception as exc:  # noqa: BLE001
            print(f"chart failed: {short_error(exc)}", flush=True)
    try:
        dist.barrier()
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001
        pass
    if env.cuda:
        # Everything is written. Skip interpreter teardown: freeing NVSHMEM symmetric memory is collective and
        # can hang at exit, which would only burn device time.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def tuned_choice(entry: dict, metric: str) -> tuple[dict, float, int] | None:
    """The fastest successful comet_cfg<i> variant of a case entry: ``(its kernel config, ms, timed count)``."""
    timed = [
        (r[metric], r["kernel_config"])
        for v, r in entry.get("variants", {}).items()
        if v.startswith(SWEEP_PREFIX) and isinstance(r, dict) and isinstance(r.get(metric), (int, float))
    ]
    if not timed:
        return None
    ms, config = min(timed, key=lambda t: t[0])
    return config, ms, len(timed)


def store_tuned(name: str, entry: dict, metric: str) -> dict:
    """Write the case's fastest configuration to the tuning cache under the key the fused backend looks up for this
    shape (recorded by the sweep variants from ``FusedBackend.shape_key``)."""
    from comet_megatron.tuning import KernelConfig, ShapeKey, cache_path, store_config

    choice = tuned_choice(entry, metric)
    if choice is None:
        return {"stored": False, "why": f"no comet_cfg variant of {name} was timed ({metric})"}
    config, ms, count = choice
    key = ShapeKey(
        **next(
            r["shape_key"]
            for v, r in entry["variants"].items()
            if v.startswith(SWEEP_PREFIX) and isinstance(r, dict) and "shape_key" in r
        )
    )
    store_config(key, KernelConfig(**config))
    return {"stored": True, "key": key.as_str(), "cache": str(cache_path()), metric: ms, "of": count, "config": config}


def symm_skip_reason(env: Env, case: Case, buffers) -> str | None:
    if env.ws == 1:
        return "skipped: all_to_all_vdev_2d needs EP > 1"
    if env.ws > VDEV_MAX_WORLD:
        return f"skipped: all_to_all_vdev_2d_offset supports at most {VDEV_MAX_WORLD} ranks"
    if env.cuda:
        try:
            if not symm_module().is_nvshmem_available():
                return "skipped: NVSHMEM is not available (all_to_all_vdev_2d needs it)"
            if not hasattr(torch.ops.symm_mem, "all_to_all_vdev_2d"):
                return "skipped: torch.ops.symm_mem.all_to_all_vdev_2d is absent in this torch"
        except Exception as exc:  # noqa: BLE001
            return f"skipped: symmetric memory unavailable ({short_error(exc)})"
    if isinstance(buffers, str) and buffers != "probe":
        return buffers
    return None


if __name__ == "__main__":
    main()
