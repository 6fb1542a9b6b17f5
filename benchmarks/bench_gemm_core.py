#!/usr/bin/env python3
"""The fused kernels' GEMM cores on one GPU, next to ``torch._grouped_mm`` on the same shapes.

``--ep`` ranks are simulated on one device (:func:`comet_megatron.fused_ops.single_process_views`): every
rank's pushes run once (``MODE=1``), then rank 0's GEMM programs alone are timed (``MODE=2``: the flags are
already published, so nothing waits) — the GEMM and its fused epilogue without communication. This separates
the GEMM core's efficiency from the overlap, which ``bench_layer.py`` measures on the real EP group.

Per kernel configuration (``--configs``: a JSON list of ``KernelConfig`` overrides of what the layer would choose
without a tuning cache, ``tuning.default_config`` for the case on this GPU; ``{}`` = that choice):

  fc1         dispatch ⊕ fc1 GEMM programs, SwiGLU·prob epilogue, pre-activation saved (training forward)
  fc1+push    the same kernel with its push programs running (rows copied within the device, flags already
              set, so the GEMM does not wait: the cost of the SMs the push takes)
  fc2         fc2 ⊕ combine (epilogue stores rows at their owners' slots)
  fc2_dgrad   fc2 data-gradient GEMM programs and the SwiGLU backward + d_prob (in the GEMM's epilogue with
              ``dgrad_fused_activation``, else the in-place elementwise kernel that follows, timed together)
  fc1_dgrad   fc2 ⊕ combine kernel on fc1's ``[2F, H]`` weights (``weight_kn``), the fc1 data-gradient

Baselines, once: ``torch._grouped_mm`` of each GEMM alone, and with the same elementwise work in PyTorch
(``gm_fc1+act``: silu(gate)·up·prob; ``gm_fc2_dgrad+act``: the SwiGLU backward and d_prob). Floors: the GEMM
FLOPs at the dense bf16 ``torch.mm`` rate measured in the same run.

  python benchmarks/bench_gemm_core.py --case mixtral-8x7b --tokens 4096 --ep 2 \
      --configs '[{}, {"dgrad_fused_activation": true}]' --out DIR   # writes DIR/bench_gemm_core_<case>.json, .png
  python benchmarks/bench_gemm_core.py --replot FILE.json [FILE.json ...]  # redraw charts (FILE.png)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys

import torch
import torch.nn.functional as F

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_layer import CASES, parse_comet_configs  # noqa: E402
from gpu_timing import dense_matmul_tflops  # noqa: E402
from gpu_timing import time_ms as gpu_time_ms  # noqa: E402

from comet_megatron.fused_ops import (  # noqa: E402
    dispatch_dgrad,
    dispatch_fc1,
    fc2_combine,
    single_process_views,
)
from comet_megatron.fused_plan import build_plan  # noqa: E402
from comet_megatron.routing import build_local_routing  # noqa: E402
from comet_megatron.tuning import KernelConfig, ShapeKey, default_config  # noqa: E402
from tests.fused_simulation import random_routing  # noqa: E402

KERNELS = ("fc1", "fc1+push", "fc2", "fc2_dgrad", "fc1_dgrad")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", default="mixtral-8x7b", choices=sorted(CASES))
    p.add_argument("--tokens", type=int, default=None, help="tokens per simulated rank (default: the case's)")
    p.add_argument("--ep", type=int, default=2, help="simulated expert-parallel ranks")
    p.add_argument("--configs", default="[{}]", help="JSON list of KernelConfig overrides ({} = the layer's default)")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="directory for bench_gemm_core_<case>.json")
    args = p.parse_args(argv)
    args.overrides = parse_comet_configs(p, args.configs) or [{}]
    if args.ep < 1 or CASES[args.case].experts % args.ep:
        p.error(f"--ep {args.ep} must be >= 1 and divide the case's {CASES[args.case].experts} experts")
    return args


def kernel_configs(base: KernelConfig, overrides: list[dict]) -> list[KernelConfig]:
    return [dataclasses.replace(base, **o) for o in overrides]


def time_ms(fn, iters: int, warmup: int) -> float:
    return gpu_time_ms(fn, iters, warmup)[0]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


class Problem:
    """Inputs, routing and per-rank plans of one case on ``ep`` simulated ranks (rank 0 is timed)."""

    def __init__(self, case, tokens: int, ep: int, dev, seed: int):
        gen = torch.Generator(device="cpu").manual_seed(seed)
        wgen = torch.Generator(device=dev).manual_seed(seed)
        self.ep, self.tokens, self.topk = ep, tokens, case.topk
        self.hidden, self.ffn, self.e_local = case.hidden, case.ffn, case.experts // ep
        h, f = self.hidden, self.ffn

        def randn(*shape, scale=1.0):
            return (torch.randn(*shape, device=dev, generator=wgen) * scale).bfloat16()

        self.w1 = [randn(self.e_local, 2 * f, h, scale=h**-0.5) for _ in range(ep)]
        self.w2 = [randn(self.e_local, h, f, scale=f**-0.5) for _ in range(ep)]
        self.x = [randn(tokens, h) for _ in range(ep)]
        self.grad_out = [randn(tokens, h) for _ in range(ep)]
        self.routing = [
            build_local_routing(*random_routing(gen, tokens, case.experts, case.topk), case.topk) for _ in range(ep)
        ]
        self.counts = torch.stack([r.tokens_per_expert for r in self.routing])
        self.token_of_slot = [r.token_of_slot.to(dev) for r in self.routing]
        self.probs_of_slot = [r.probs_of_slot.float().to(dev) for r in self.routing]
        recv_cap = int(self.counts.view(ep, ep, self.e_local).sum(0).sum(1).max())
        self.views = single_process_views(
            ep,
            recv_capacity=recv_cap,
            slot_capacity=tokens * case.topk,
            hidden=h,
            num_local_experts=self.e_local,
            max_tiles_per_expert=-(-recv_cap // 16),  # enough flags for the smallest block_m
            device=dev,
        )
        self.dev = dev

    def plans(self, block_m: int, own_rows_first: bool = True):
        max_t = self.views[0].max_tiles_per_expert
        plans = [
            build_plan(self.counts, r, self.e_local, block_m, max_t, own_rows_first=own_rows_first)
            for r in range(self.ep)
        ]
        tables = [p.device_tables(self.dev) for p in plans]
        return plans, tables

    def fc1_outputs(self, plans) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Each rank's fc1 output ``[R, F]`` and pre-activation ``[R, 2F]`` (bf16), poisoned with NaN."""
        f = self.ffn
        acts = [torch.full((p.recv_rows, f), float("nan"), dtype=torch.bfloat16, device=self.dev) for p in plans]
        pres = [torch.full((p.recv_rows, 2 * f), float("nan"), dtype=torch.bfloat16, device=self.dev) for p in plans]
        return acts, pres

    def dispatch_fc1(self, rank: int, plans, tables, acts, preacts, *, mode: int, epoch: int, **common):
        """``rank``'s dispatch ⊕ fc1 launch (``MODE`` 0: pushes + GEMM, 1: pushes, 2: GEMM), pre-activation saved
        (training forward); ``common``: ``ep``, ``gated``, ``activation``, ``config``, ``grid``."""
        return dispatch_fc1(
            self.views[rank], plans[rank], tables[rank], self.x[rank], self.token_of_slot[rank],
            self.probs_of_slot[rank], self.w1[rank], epoch=epoch, ep_rank=rank, mode=mode, save_preact=True,
            act_out=acts[rank], preact_out=preacts[rank], **common,
        )  # fmt: skip


def _segments(prob: Problem, plan):
    """``(rows, source rank, source slots)`` of every (local expert, source) segment of rank 0's expert-major rows
    (``src_table``: offset inside the expert, count; ``src_first_slot``: the source's first slot)."""
    start = 0
    for e, n_rows in enumerate(plan.tokens_per_expert.tolist()):
        for s in range(prob.ep):
            offset, count = (int(v) for v in plan.src_table[e, s])
            first = int(plan.src_first_slot[e, s])
            yield slice(start + offset, start + offset + count), s, torch.arange(first, first + count, device=prob.dev)
        start += n_rows


def expected_received(prob: Problem, plan, sources: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank 0's receive buffer as the pushes of ``sources[s][token]`` rows must leave it, with the probabilities."""
    x = torch.empty(plan.recv_rows, prob.hidden, dtype=torch.bfloat16, device=prob.dev)
    p = torch.empty(plan.recv_rows, dtype=torch.float32, device=prob.dev)
    for rows, s, slots in _segments(prob, plan):
        x[rows] = sources[s][prob.token_of_slot[s][slots]]
        p[rows] = prob.probs_of_slot[s][slots]
    return x, p


def combined_rows(prob: Problem, plan, epoch: int) -> torch.Tensor:
    """What rank 0's layer1 kernel wrote into its rows' owners' combine slots, back in rank 0's row order."""
    out = torch.empty(plan.recv_rows, prob.hidden, dtype=torch.bfloat16, device=prob.dev)
    for rows, s, slots in _segments(prob, plan):
        out[rows] = prob.views[s].combine_slots(epoch, prob.tokens * prob.topk, prob.hidden)[slots]
    return out


def fc1_reference(x_e: torch.Tensor, p_e: torch.Tensor, w1: torch.Tensor, offs: torch.Tensor):
    """PyTorch's fc1 on expert-major rows ``x_e [R, H]`` with weights ``w1 [E, 2F, H]`` and probabilities ``p_e [R]``:
    ``(preact [R, 2F] bf16, act [R, F] bf16)``, act = silu(gate)·linear·prob in fp32 from the bf16 fc1 output."""
    pre = torch._grouped_mm(x_e, w1.transpose(1, 2), offs=offs)
    gate, lin = pre.chunk(2, dim=-1)
    return pre, (F.silu(gate.float()) * lin.float() * p_e[:, None]).bfloat16()


def swiglu_backward(d_a: torch.Tensor, pre: torch.Tensor, p: torch.Tensor):
    """PyTorch's SwiGLU·prob backward in fp32 from ``dA [R, F]``, the fc1 output ``pre = [gate | linear]`` and the
    probabilities ``p [R]``: ``(d_gate, d_linear, d_prob)`` — the baseline's elementwise work and the reference."""
    gate, lin = (t.float() for t in pre.chunk(2, dim=-1))
    d_a = d_a.float()
    s = torch.sigmoid(gate)
    silu = gate * s
    scaled = d_a * p[:, None]
    return scaled * lin * s * (1 + gate * (1 - s)), scaled * silu, (d_a * silu * lin).sum(-1)


def run_config(prob: Problem, cfg: KernelConfig, epoch0: int, num_sms: int, args) -> dict:
    ep, f, h = prob.ep, prob.ffn, prob.hidden
    plans, tables = prob.plans(cfg.block_m, cfg.own_rows_first)
    rows = plans[0].recv_rows
    common = dict(ep=ep, gated=True, activation="silu", config=cfg, grid=cfg.persistent_grid(num_sms))
    acts, preacts = prob.fc1_outputs(plans)
    fwd, bwd = epoch0, epoch0 + 1

    def fc1(r, mode, epoch=fwd):
        return prob.dispatch_fc1(r, plans, tables, acts, preacts, mode=mode, epoch=epoch, **common)

    def dgrad(r, mode, epoch=bwd):
        return dispatch_dgrad(
            prob.views[r], plans[r], tables[r], prob.grad_out[r], prob.token_of_slot[r], prob.probs_of_slot[r],
            prob.w2[r], preacts[r], epoch=epoch, ep_rank=r, mode=mode, **common,
        )  # fmt: skip

    out = {"config": dataclasses.asdict(cfg), "ms": {}}
    for r in range(ep):
        fc1(r, 1)
    fc1(0, 2)
    torch.cuda.synchronize()
    x_e = prob.views[0].received(rows, h).clone()
    p_e = prob.views[0].recv_probs[:rows].clone()
    act0, pre0 = acts[0].clone(), preacts[0].clone()
    want_x, want_p = expected_received(prob, plans[0], prob.x)
    pushed_ok = bool(torch.equal(x_e, want_x) and torch.equal(p_e, want_p))
    offs = torch.cumsum(plans[0].tokens_per_expert.to(prob.dev), 0).to(torch.int32)
    out["ms"]["fc1"] = time_ms(lambda: fc1(0, 2), args.iters, args.warmup)
    out["ms"]["fc1+push"] = time_ms(lambda: fc1(0, 0), args.iters, args.warmup)
    layer1 = dict(ep_rank=0, ep=ep, config=cfg, grid=cfg.persistent_grid(num_sms))
    out["ms"]["fc2"] = time_ms(
        lambda: fc2_combine(prob.views[0], plans[0], tables[0], act0, prob.w2[0], epoch=fwd, **layer1),
        args.iters,
        args.warmup,
    )
    torch.cuda.synchronize()
    ref_fc2 = torch._grouped_mm(act0, prob.w2[0].transpose(1, 2), offs=offs)
    fc2_err = rel_err(combined_rows(prob, plans[0], fwd), ref_fc2)
    for r in range(ep):
        dgrad(r, 1)
    d_fc1, d_prob = dgrad(0, 2)
    torch.cuda.synchronize()
    d_y = prob.views[0].received(rows, h).clone()
    want_dy, want_p = expected_received(prob, plans[0], prob.grad_out)
    pushed_ok = pushed_ok and bool(torch.equal(d_y, want_dy) and torch.equal(prob.views[0].recv_probs[:rows], want_p))
    out["ms"]["fc2_dgrad"] = time_ms(lambda: dgrad(0, 2), args.iters, args.warmup)
    d_fc1 = d_fc1.clone()
    out["ms"]["fc1_dgrad"] = time_ms(
        lambda: fc2_combine(prob.views[0], plans[0], tables[0], d_fc1, prob.w1[0], epoch=bwd, weight_kn=True, **layer1),
        args.iters,
        args.warmup,
    )
    torch.cuda.synchronize()
    fc1_dgrad_err = rel_err(combined_rows(prob, plans[0], bwd), torch._grouped_mm(d_fc1, prob.w1[0], offs=offs))
    # correctness of what was timed, against the PyTorch path on the same rows (the pushes: exactly)
    ref_pre, ref_act = fc1_reference(x_e, p_e, prob.w1[0], offs)
    ref_d_gate, ref_d_lin, ref_d_prob = swiglu_backward(torch._grouped_mm(d_y, prob.w2[0], offs=offs), ref_pre, p_e)
    out["pushed_rows_exact"] = pushed_ok
    out["rel_err"] = {
        "fc1_act": rel_err(act0, ref_act),
        "fc1_preact": rel_err(pre0, ref_pre),
        "fc2": fc2_err,
        "fc2_dgrad_d_gate": rel_err(d_fc1[:, :f], ref_d_gate),
        "fc2_dgrad_d_linear": rel_err(d_fc1[:, f:], ref_d_lin),
        "fc2_dgrad_d_prob": rel_err(d_prob, ref_d_prob),
        "fc1_dgrad": fc1_dgrad_err,
    }
    return out


def run_baselines(prob: Problem, args) -> tuple[dict, dict]:
    f, h = prob.ffn, prob.hidden
    plans, _ = prob.plans(128)
    rows = plans[0].recv_rows
    offs = torch.cumsum(plans[0].tokens_per_expert.to(prob.dev), 0).to(torch.int32)
    gen = torch.Generator(device=prob.dev).manual_seed(args.seed + 1)
    x_e = torch.randn(rows, h, device=prob.dev, generator=gen).bfloat16()
    p_e = torch.rand(rows, device=prob.dev, generator=gen)
    w1, w2 = prob.w1[0], prob.w2[0]
    pre = torch._grouped_mm(x_e, w1.transpose(1, 2), offs=offs)
    act = (F.silu(pre[:, :f]) * pre[:, f:] * p_e[:, None].bfloat16()).contiguous()
    d_fc1 = torch.randn(rows, 2 * f, device=prob.dev, generator=gen).bfloat16()

    def fc1_act():
        y = torch._grouped_mm(x_e, w1.transpose(1, 2), offs=offs)
        gate, lin = y.chunk(2, dim=-1)
        return F.silu(gate) * lin * p_e[:, None].to(torch.bfloat16)

    def dgrad_act():
        d_gate, d_lin, d_prob = swiglu_backward(torch._grouped_mm(x_e, w2, offs=offs), pre, p_e)
        return torch.cat([d_gate.bfloat16(), d_lin.bfloat16()], dim=-1), d_prob

    ms = {
        "gm_fc1": time_ms(lambda: torch._grouped_mm(x_e, w1.transpose(1, 2), offs=offs), args.iters, args.warmup),
        "gm_fc1+act": time_ms(fc1_act, args.iters, args.warmup),
        "gm_fc2": time_ms(lambda: torch._grouped_mm(act, w2.transpose(1, 2), offs=offs), args.iters, args.warmup),
        "gm_fc2_dgrad": time_ms(lambda: torch._grouped_mm(x_e, w2, offs=offs), args.iters, args.warmup),
        "gm_fc2_dgrad+act": time_ms(dgrad_act, args.iters, args.warmup),
        "gm_fc1_dgrad": time_ms(lambda: torch._grouped_mm(d_fc1, w1, offs=offs), args.iters, args.warmup),
    }
    flops = {
        "fc1": 2 * rows * h * 2 * f,
        "fc2": 2 * rows * f * h,
        "fc2_dgrad": 2 * rows * h * f,
        "fc1_dgrad": 2 * rows * 2 * f * h,
    }
    return ms, flops


BASELINE_OF = {
    "fc1": "gm_fc1+act",
    "fc1+push": "gm_fc1+act",
    "fc2": "gm_fc2",
    "fc2_dgrad": "gm_fc2_dgrad+act",
    "fc1_dgrad": "gm_fc1_dgrad",
}


def plot(report: dict, path: str) -> str:
    """Bars per kernel: every configuration's ms, the cuBLAS baseline of the same work, the GEMM floor (dashed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no chart written"
    configs = [c for c in report["configs"] if "error" not in c]
    series = [(json.dumps(c["overrides"]) if c["overrides"] else "defaults of the run", c["ms"]) for c in configs]
    series.append(
        ("torch._grouped_mm (+ PyTorch elementwise)", {k: report["baseline_ms"][BASELINE_OF[k]] for k in KERNELS})
    )
    fig, ax = plt.subplots(figsize=(10, 7))
    width = 0.8 / len(series)
    for i, (label, ms) in enumerate(series):
        ax.bar([j - 0.4 + (i + 0.5) * width for j in range(len(KERNELS))], [ms[k] for k in KERNELS], width, label=label)
    for j, k in enumerate(KERNELS):
        floor = report["floor_ms"][k.split("+")[0]]
        ax.hlines(floor, j - 0.45, j + 0.45, colors="black", linestyles="--", label="GEMM floor" if j == 0 else None)
    ax.set_xticks(range(len(KERNELS)))
    ax.set_xticklabels(KERNELS)
    ax.set_ylabel("ms")
    shape = report["shape"]
    ax.set_title(
        f"{report['case']}, {shape['tokens']} tokens/rank, EP {report['ep_simulated']} simulated, {report['device']}"
    )
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"chart written: {path}"


@dataclasses.dataclass
class GpuSetup:
    """One case on the first GPU, with the configuration the layer would choose for it untuned (the single-GPU
    benchmarks' common start)."""

    dev: torch.device
    props: object  # torch.cuda device properties
    case_name: str
    tokens: int
    prob: Problem
    base: KernelConfig

    @classmethod
    def start(cls, case_name: str, tokens: int | None, ep: int, seed: int, no_gpu_message: str) -> GpuSetup:
        if not torch.cuda.is_available():
            sys.exit(no_gpu_message)
        dev = torch.device("cuda", 0)
        torch.cuda.set_device(dev)
        case = CASES[case_name]
        tokens = tokens or case.tokens
        props = torch.cuda.get_device_properties(dev)
        key = ShapeKey(
            tokens, case.hidden, case.ffn, case.experts, case.topk, ep, props.name, props.multi_processor_count
        )
        return cls(dev, props, case_name, tokens, Problem(case, tokens, ep, dev, seed), default_config(key))

    @property
    def num_sms(self) -> int:
        return self.props.multi_processor_count

    def report_head(self, bench: str) -> dict:
        """The fields every report starts with: what ran, where, on which shape."""
        return {
            "bench": bench,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "device": self.props.name,
            "num_sms": self.num_sms,
            "torch": torch.__version__,
            "case": self.case_name,
            "shape": dataclasses.asdict(CASES[self.case_name]) | {"tokens": self.tokens},
        }


def main(argv=None) -> None:
    if argv is None and len(sys.argv) > 2 and sys.argv[1] == "--replot":
        for path in sys.argv[2:]:
            with open(path) as fh:
                print(plot(json.load(fh), os.path.splitext(path)[0] + ".png"))
        return
    args = parse_args(argv)
    gpu = GpuSetup.start(
        args.case,
        args.tokens,
        args.ep,
        args.seed,
        "bench_gemm_core.py needs a CUDA GPU (it times compiled Triton kernels)",
    )
    prob, props, tokens = gpu.prob, gpu.props, gpu.tokens
    rate = dense_matmul_tflops(gpu.dev)
    base_ms, flops = run_baselines(prob, args)
    results = []
    for i, cfg in enumerate(kernel_configs(gpu.base, args.overrides)):
        try:
            res = run_config(prob, cfg, epoch0=2 * i + 1, num_sms=gpu.num_sms, args=args)
        except Exception as exc:  # e.g. a configuration that needs more shared memory than the GPU has
            res = {"config": dataclasses.asdict(cfg), "error": f"{type(exc).__name__}: {exc}"[:300]}
            torch.cuda.synchronize()
        res["overrides"] = args.overrides[i]
        results.append(res)
    report = gpu.report_head("bench_gemm_core") | {
        "ep_simulated": args.ep,
        "recv_rows_rank0": prob.plans(128)[0][0].recv_rows,
        "matmul_tflops": rate,
        "flops": flops,
        "floor_ms": {k: v / rate / 1e9 for k, v in flops.items()},
        "baseline_ms": base_ms,
        "configs": results,
        "command": " ".join(sys.argv),
    }
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, f"bench_gemm_core_{args.case}.json")
        with open(path, "w") as fh:
            json.dump(report, fh, indent=1)
        print(plot(report, os.path.splitext(path)[0] + ".png"))
    print(f"\n{args.case}, {tokens} tokens/rank, ep {args.ep} simulated, rank-0 rows {report['recv_rows_rank0']}, "
          f"{props.name}, mm {rate:.0f} TFLOP/s")  # fmt: skip
    print(f"{'kernel':<11} {'floor':>6} " + " ".join(f"{'cfg' + str(i):>16}" for i in range(len(results)))
          + f" {'baseline':>22}")  # fmt: skip
    for k in KERNELS:
        fl = k.split("+")[0]
        cells = []
        for res in results:
            if "error" in res:
                cells.append("failed".rjust(16))
                continue
            ms = res["ms"][k]
            cells.append(f"{ms:6.3f} {flops[fl] / ms / 1e9:4.0f}TF {report['floor_ms'][fl] / ms:3.0%}"[:16].rjust(16))
        b = BASELINE_OF[k]
        print(f"{k:<11} {report['floor_ms'][fl]:6.3f} " + " ".join(cells) + f" {b:>16} {base_ms[b]:5.3f}")
    print("bare grouped_mm: " + ", ".join(f"{k} {v:.3f}" for k, v in base_ms.items()))
    for i, res in enumerate(results):
        errs = res.get("error") or ", ".join(f"{k} {v:.1e}" for k, v in res["rel_err"].items())
        if "error" not in res:
            errs += f", pushed rows exact: {res['pushed_rows_exact']}"
        print(f"cfg{i} {json.dumps(res['overrides'])}: {errs}")


if __name__ == "__main__":
    main()
