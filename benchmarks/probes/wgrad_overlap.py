#!/usr/bin/env python3
"""Can a weight gradient's fp32 ``main_grad`` read-modify-write hide under its GEMM on this GPU at all?

``bench_wgrad.py`` (session 24) shows both accumulating ways (per-expert cuBLAS with ``beta = 1``, the grouped Triton
kernel) taking about the bf16 GEMM's time plus the time of the ``main_grad`` traffic alone, i.e. no overlap. Before
changing the kernel this probe asks whether the hardware overlaps the two kinds of work when they are independent:

  gemm        ``torch._grouped_mm`` of the bf16 gradient (no accumulation)
  rmw         ``main_grad.add_(1.0)``: the same 8 bytes per parameter of HBM traffic, nothing else
  both        the two launched together on two streams (wall time from a common start to both ends)
  kernel      the accumulating kernel (``kernels/wgrad.py``), the GEMM and the read-modify-write in one launch
  per_expert  per-expert cuBLAS ``beta = 1`` GEMMs on 3 streams

``both`` near ``max(gemm, rmw)``: the overlap is there to take, the kernel's design is what serialises. ``both`` near
``gemm + rmw``: the GPU does not run them side by side (shared power / clock budget, or the GEMM holding every SM);
the SM clock and board power sampled by ``nvidia-smi`` while each variant runs in a loop tell the two apart.

What it showed (session 25, one H200, ``benchmarks/results/s25/wgrad/wgrad_overlap.json``): ``both`` = 0.98-1.00 ×
``gemm + rmw`` on all five shapes. The grouped GEMM alone runs at the 700 W cap (SM clock 1410-1740 MHz, 640-692 W),
the read-modify-write alone at 1980 MHz and ~470 W; the accumulating kernel lands at about the sum too, per-expert
cuBLAS on 3 streams 6-25% under it. On the GEMM-bound shapes that is mostly the power budget. On DSv3-like (rmw 7.1
ms, gemm 4.3, 1980 MHz, 633 W) it is not, and ``both`` still does not co-run: most likely cuBLAS's persistent
programs leave no room on an SM for the elementwise kernel's (an inference: occupancy was not measured), so this pair
is no test of the hardware there. The kernel's own serialisation on that shape survived tiles with more programs per
SM and fire-and-forget ``red`` reductions (calls 2-3, perf-log session 25).

  python benchmarks/probes/wgrad_overlap.py --out DIR   # DIR/wgrad_overlap.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))

from bench_wgrad import WgradInputs, expert_rows  # noqa: E402
from gpu_timing import time_ms  # noqa: E402

from comet_megatron.ops.grouped_linear import (  # noqa: E402
    add_weight_grad_to_main_grad,
    add_weight_grad_to_main_grad_by_kernel,
)

# (name, tokens per rank, topk, experts, ep, out, in): one weight gradient per case, fc1's unless named fc2
SHAPES = [
    ("qwen2-57b fc1 4096", 4096, 8, 64, 2, 5120, 3584),
    ("dsv3-like fc1", 4096, 8, 256, 2, 4096, 7168),
    ("phi3.5 fc1", 8192, 2, 16, 2, 12800, 4096),
    ("qwen1.5 fc1", 8192, 4, 60, 2, 2816, 2048),
    ("mixtral fc2 4096", 4096, 2, 8, 2, 4096, 14336),
]


def sample_clocks(fn, seconds: float) -> dict:
    """Median SM clock (MHz) and board power (W) from ``nvidia-smi`` while ``fn`` runs back to back."""
    smi = subprocess.Popen(
        ["nvidia-smi", "--query-gpu=clocks.sm,power.draw", "--format=csv,noheader,nounits", "-lms", "50"],
        stdout=subprocess.PIPE,
        text=True,
    )
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
    smi.terminate()
    rows = [line.split(",") for line in smi.communicate()[0].splitlines() if line.count(",") == 1]
    rows = rows[len(rows) // 4 :]  # the clocks settle after the first samples
    if not rows:
        return {}
    return {
        "sm_mhz": statistics.median(float(r[0]) for r in rows),
        "power_w": statistics.median(float(r[1]) for r in rows),
        "samples": len(rows),
    }


def probe(name, tokens, topk, experts, ep, out_features, in_features, args) -> dict:
    rows = expert_rows(tokens, topk, experts, ep, "random")
    total = sum(rows)
    x, dy, counts, offs, main_grad, _ = WgradInputs.random(rows, out_features, in_features, seed=total)
    side = torch.cuda.Stream()

    def gemm():
        return torch._grouped_mm(dy.t(), x, offs=offs)

    def rmw():
        main_grad.add_(1.0)

    def both():
        main = torch.cuda.current_stream()
        side.wait_stream(main)
        gemm()
        with torch.cuda.stream(side):
            rmw()
        main.wait_stream(side)

    variants = {
        "gemm": gemm,
        "rmw": rmw,
        "both": both,
        "kernel": lambda: add_weight_grad_to_main_grad_by_kernel(main_grad, dy, x, counts),
        "per_expert": lambda: add_weight_grad_to_main_grad(main_grad, dy, x, rows, streams=3),
    }
    entry = {"experts": len(rows), "rows": total, "out": out_features, "in": in_features}
    entry["rmw_GB"] = round(main_grad.numel() * 8 / 1e9, 3)  # HBM traffic of one read-modify-write (fp32 in and out)
    for label, fn in variants.items():
        ms, _ = time_ms(fn, args.iters, args.warmup)
        entry[label] = {"ms": round(ms, 4), **sample_clocks(fn, args.clock_seconds)}
    g, r = entry["gemm"]["ms"], entry["rmw"]["ms"]
    entry["both_vs_max"] = round(entry["both"]["ms"] / max(g, r), 3)
    entry["both_vs_sum"] = round(entry["both"]["ms"] / (g + r), 3)
    entry["kernel_vs_sum"] = round(entry["kernel"]["ms"] / (g + r), 3)
    print(
        f"{name:20s} "
        + "  ".join(
            f"{k} {v['ms']:.3f} ({v.get('sm_mhz', 0):.0f} MHz {v.get('power_w', 0):.0f} W)"
            for k, v in entry.items()
            if isinstance(v, dict)
        )
        + f"  both/max {entry['both_vs_max']:.2f} both/sum {entry['both_vs_sum']:.2f}",
        flush=True,
    )
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--clock-seconds", type=float, default=1.5, help="seconds of each variant under nvidia-smi")
    parser.add_argument("--shapes", default="", help="comma-separated prefixes of the shapes to run (default: all)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    chosen = [s for s in SHAPES if not args.shapes or any(s[0].startswith(p) for p in args.shapes.split(","))]
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "shapes": {}}
    for shape in chosen:
        report["shapes"][shape[0]] = probe(*shape, args)
        torch.cuda.empty_cache()  # the last shape's main_grad (up to 15 GB) is garbage once probe returns
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "wgrad_overlap.json"), "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
