#!/usr/bin/env python3
"""Host cost of every step of the fused forward, on one GPU, without a profiler.

Between the counts read (which drains the GPU's queue) and the first fused kernel the GPU idles for as long as
the host works; before that read, on the fine-grained cases, the host's small launches pace the GPU. A profiler
inflates exactly these costs (2-5x per operator), so this times each step of rank 0's forward with
``time.perf_counter`` around the real launchers — the same calls ``backends/fused.py`` makes, in the same order,
with the kernels running — and reports the median host microseconds of each, plus reference launches (an empty
Triton kernel with 1 and with 40 arguments, the latter also through its compiled kernel's own launcher and through
``comet_megatron/launcher.py``; ``torch.empty``, ``torch.zeros``) to tell fixed launch costs from Python work. One
rank (EP=1) on the device; the routing is random (softmax top-k of Gaussian logits).

  python benchmarks/bench_host_path.py --case qwen1.5-moe-a2.7b --iters 200 --out DIR  # .json, .png
  python benchmarks/bench_host_path.py --launch both ...  # iterations alternate the fast launch path
                                                          # (comet_megatron/launcher.py) and Triton's own
  python benchmarks/bench_host_path.py --replot A.json B.json --png chart.png
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from collections import defaultdict

import torch
import triton
import triton.language as tl

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_layer import CASES  # noqa: E402

from comet_megatron import fused_ops  # noqa: E402
from comet_megatron.backends.fused import _start_copy_to_host  # noqa: E402
from comet_megatron.fused_plan import HostPlan, check_device_plan, device_plan  # noqa: E402
from comet_megatron.launcher import launch  # noqa: E402
from comet_megatron.routing import build_local_routing  # noqa: E402
from comet_megatron.tuning import ShapeKey, default_config  # noqa: E402
from tests.fused_simulation import random_routing  # noqa: E402


@triton.jit
def _empty_kernel_1(a):
    pass


@triton.jit
def _empty_kernel_40(
    a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, a17, a18, a19,
    a20, a21, a22, a23, a24, a25, a26, a27, a28, a29, a30, a31, a32, a33, a34, a35, a36, a37, a38, a39,
    C0: tl.constexpr, C1: tl.constexpr, C2: tl.constexpr, C3: tl.constexpr,
):  # fmt: skip
    pass


class HostClock:
    """Median host microseconds per labelled step (steps with one label in an iteration are summed first)."""

    def __init__(self):
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.current: dict[str, float] = defaultdict(float)
        self.enabled = False

    def step(self, label: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        if self.enabled:
            self.current[label] += (time.perf_counter() - t0) * 1e6
        return out

    def end_iteration(self) -> None:
        for label, us in self.current.items():
            self.samples[label].append(us)
        self.current.clear()

    def medians(self) -> dict[str, float]:
        return {label: statistics.median(v) for label, v in self.samples.items()}


def forward_steps(clock: HostClock, inputs: dict, views, epoch: int) -> None:
    """Rank 0's fused forward, step by step as ``FusedBackend.dispatch`` and ``_FusedMoE.forward`` run it."""
    cfg, dev = inputs["config"], inputs["x"].device
    tokens, topk, e_local = inputs["tokens"], inputs["topk"], inputs["e_local"]
    sorted_routing = clock.step(
        "routing, sorted (torch ops)", build_local_routing, inputs["routing_map"], inputs["probs"], topk, False
    )
    clock.step("  + slot_of_token by argsort", sorted_routing.slot_of_token)
    routing = clock.step("routing kernel", build_local_routing, inputs["routing_map"], inputs["probs"], topk, True)
    slot_of_token = routing.slot_of_token()
    counts = inputs["counts"]  # [ep, E] (an all-gather in the layer)
    counts_host, copied = clock.step("counts copy + event", _start_copy_to_host, counts)
    tables = clock.step("device_plan (launch)", device_plan, counts, 0, e_local, cfg.block_m, tokens, topk)
    copied.synchronize()  # the wait itself is not host work
    plan = clock.step("HostPlan", HostPlan, counts_host, 0, e_local, topk)
    tables = clock.step(
        "check_device_plan", check_device_plan, tables, plan, counts, cfg.block_m, tokens, views.max_tiles_per_expert
    )
    probs32 = clock.step("probs .float()", lambda: routing.probs_of_slot.detach().float().contiguous())
    rows, hidden = plan.recv_rows, inputs["x"].shape[1]
    clock.step(
        "  of which: act+preact empty", lambda: (torch.empty(rows, 8, device=dev), torch.empty(rows, 16, device=dev))
    )
    clock.step(
        "  of which: TMA descriptors",
        fused_ops._tma_descriptors,
        views.received(rows, hidden),
        inputs["w1"].view(-1, hidden),
        [cfg.block_m, cfg.block_k],
        [cfg.fc1_block_n, cfg.block_k],
    )
    act, preact = clock.step(
        "dispatch_fc1 (launcher)",
        fused_ops.dispatch_fc1,
        views,
        plan,
        tables,
        inputs["x"],
        routing.token_of_slot,
        probs32,
        inputs["w1"],
        epoch=epoch,
        ep_rank=0,
        ep=1,
        gated=True,
        activation="silu",
        config=cfg,
        grid=cfg.persistent_grid(inputs["num_sms"]),
        save_preact=True,
    )
    clock.step("save clones", lambda: (views.received(rows, hidden).clone(), views.recv_probs[:rows].clone()))
    clock.step(
        "fc2_combine (launcher)",
        fused_ops.fc2_combine,
        views,
        plan,
        tables,
        act,
        inputs["w2"],
        epoch=epoch,
        ep_rank=0,
        ep=1,
        config=cfg,
        grid=cfg.persistent_grid(inputs["num_sms"]),
    )
    clock.step(
        "combine_reduce (launcher)",
        fused_ops.combine_reduce,
        views,
        slot_of_token,
        e_local,
        hidden,
        epoch=epoch,
        ep=1,
        topk=topk,
    )


def reference_steps(clock: HostClock, dev) -> None:
    t = torch.empty(1, device=dev)
    clock.step("ref: torch.empty", torch.empty, 1024, device=dev)
    clock.step("ref: torch.zeros(2)", torch.zeros, 2, dtype=torch.int32, device=dev)
    clock.step("ref: triton launch, 1 arg", lambda: _empty_kernel_1[(1,)](t))
    args_40 = [t] * 20 + list(range(20)) + [1, 2, 3, 4]
    clock.step("ref: triton launch, 40 args", lambda: _empty_kernel_40[(1,)](*args_40))
    # the compiled kernel's own launcher: no argument specialization, cache key or global-value check
    compiled_40 = _empty_kernel_40[(1,)](*args_40)
    clock.step("ref: compiled-kernel launch, 40 args", lambda: compiled_40[(1, 1, 1)](*args_40))
    # comet_megatron/launcher.py's cache: the compiled launcher plus its own key (COMET_FAST_LAUNCH=0: Triton's path)
    clock.step("ref: comet launch, 40 args", lambda: launch(_empty_kernel_40, (1,), *args_40))


def plot(reports: list[dict], path: str) -> str:
    """Horizontal bars of every step's median host microseconds, one group per report (case)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no chart written"
    steps = [k for k in reports[0]["host_us_median"] if not k.startswith("ref:")]
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(steps) * len(reports) + 1.5))
    height = 0.8 / len(reports)
    for i, report in enumerate(reports):
        ys = [j + i * height for j in range(len(steps))]
        ax.barh(ys, [report["host_us_median"].get(k, 0.0) for k in steps], height=height, label=report["case"])
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(steps))], [k.strip() for k in steps], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"host us per step (median), {reports[0]['device']}, triton {reports[0]['triton']}")
    ax.set_title("fused forward, host cost per step (no profiler)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"chart written: {path}"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", default="qwen1.5-moe-a2.7b", choices=sorted(CASES))
    p.add_argument("--tokens", type=int, default=None)
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument("--replot", nargs="+", default=None, metavar="JSON", help="only draw these results into --png")
    p.add_argument("--png", default=None, help="chart path (default: next to the JSON)")
    p.add_argument(
        "--launch",
        choices=("fast", "triton", "both"),
        default="fast",
        help="Triton launches through comet_megatron/launcher.py's cache (fast), Triton's own path "
        "(COMET_FAST_LAUNCH=0), or both in alternating iterations, reported side by side",
    )
    args = p.parse_args(argv)
    if args.replot:
        loaded = [json.load(open(path)) for path in args.replot]
        reports = [r for d in loaded for r in d.get("reports", [d])]
        print(plot(reports, args.png or os.path.splitext(args.replot[0])[0] + ".png"))
        return
    case = CASES[args.case]
    tokens = args.tokens or case.tokens
    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(dev)
    gen = torch.Generator().manual_seed(args.seed)
    routing_map, probs = random_routing(gen, tokens, case.experts, case.topk)
    routing_map, probs = routing_map.to(dev), probs.to(dev)
    counts = routing_map.sum(0, dtype=torch.int64)[None]
    h, f, e = case.hidden, case.ffn, case.experts
    config = default_config(ShapeKey(tokens, h, f, e, case.topk, 1, props.name, props.multi_processor_count))
    inputs = dict(
        config=config,
        tokens=tokens,
        topk=case.topk,
        e_local=e,
        routing_map=routing_map,
        probs=probs,
        counts=counts,
        x=torch.randn(tokens, h, device=dev).bfloat16(),
        w1=(torch.randn(e, 2 * f, h, device=dev) * h**-0.5).bfloat16(),
        w2=(torch.randn(e, h, f, device=dev) * f**-0.5).bfloat16(),
        num_sms=props.multi_processor_count,
    )
    rows = tokens * case.topk
    views = fused_ops.single_process_views(
        1,
        recv_capacity=rows,
        slot_capacity=rows,
        hidden=h,
        num_local_experts=e,
        max_tiles_per_expert=-(-rows // 16),
        device=dev,
    )[0]
    modes = ("fast", "triton") if args.launch == "both" else (args.launch,)
    clocks = {mode: HostClock() for mode in modes}
    for i in range(args.warmup + args.iters * len(modes)):
        mode = modes[i % len(modes)]
        os.environ["COMET_FAST_LAUNCH"] = "1" if mode == "fast" else "0"  # read at every launch
        clock = clocks[mode]
        clock.enabled = i >= args.warmup
        torch.cuda.synchronize()
        forward_steps(clock, inputs, views, epoch=i + 1)
        torch.cuda.synchronize()
        reference_steps(clock, dev)
        clock.end_iteration()
    torch.cuda.synchronize()
    medians = {mode: clock.medians() for mode, clock in clocks.items()}
    totals = {
        mode: sum(v for k, v in m.items() if not k.startswith(("ref:", "  ", "routing, sorted")))
        for mode, m in medians.items()
    }
    print(f"{args.case}, {tokens} tokens, EP=1, {props.name}, triton {triton.__version__}, torch {torch.__version__}")
    print(
        f"{'step':40s} "
        + " ".join(f"{mode + ' launch':>14s}" for mode in modes)
        + f"  host us (median of {args.iters})"
    )
    for label in medians[modes[0]]:
        print(f"{label:40s} " + " ".join(f"{medians[mode].get(label, float('nan')):14.1f}" for mode in modes))
    total_label = "forward total (rank 0, without router)"
    print(f"{total_label:40s} " + " ".join(f"{totals[mode]:14.1f}" for mode in modes) + "  (the routing kernel's path)")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, f"bench_host_path_{args.case}.json")
        reports = [
            {
                "bench": "bench_host_path",
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "device": props.name,
                "torch": torch.__version__,
                "triton": triton.__version__,
                "case": args.case if len(modes) == 1 else f"{args.case}, {mode} launch",
                "launch": mode,
                "tokens": tokens,
                "iters": args.iters,
                "host_us_median": medians[mode],
                "forward_total_us": totals[mode],
                "command": " ".join(sys.argv),
            }
            for mode in modes
        ]
        with open(path, "w") as fh:
            json.dump(reports[0] if len(reports) == 1 else {"reports": reports}, fh, indent=1)
        print(f"json written: {path}")
        print(plot(reports, args.png or os.path.splitext(path)[0] + ".png"))


if __name__ == "__main__":
    main()
