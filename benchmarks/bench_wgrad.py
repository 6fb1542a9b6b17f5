#!/usr/bin/env python3
"""The experts' weight gradients as training runs them: summed into Megatron's fp32 ``main_grad``.

One GPU; per case the rows one rank of an EP group holds (``--ep`` ranks, balanced routing: every local expert
gets ``tokens · topk · ep / experts`` rows), for fc1 (``[2F, H]`` per expert) and fc2 (``[H, F]``):

  grouped_mm          ``torch._grouped_mm`` of the bf16 gradient alone (what a benchmark without ``main_grad`` sees)
  grouped+add         the same, then ``main_grad.add_(wgrad)`` — Megatron's DDP hook without gradient-accumulation
                      fusion, and Comet's ``grouped`` accumulation
  per_expert          one cuBLAS GEMM per expert with ``beta = 1`` and an fp32 output straight into ``main_grad``, all
                      on one stream (``comet_megatron.ops.grouped_linear.add_weight_grad_to_main_grad``; Comet's
                      ``per_expert`` spreads them over ``PER_EXPERT_STREAMS`` streams: ``--per-expert-streams``)
  kernel              the accumulating grouped Triton kernel, all experts in one launch (``kernels/wgrad.py``,
                      Comet's ``kernel``); ``--kernel-configs`` adds ``kernel#1``, ... with other tiles
  per_expert_<N>streams  with ``--per-expert-streams N``: the per-expert GEMMs round-robin over N CUDA streams

Each with its median ms (CUDA events), TFLOP/s, ratio to the floor (GEMM FLOPs at the dense bf16 ``torch.mm`` rate
of the same run) and peak memory above the inputs; the accumulated ``main_grad`` of each accumulating variant
is checked against an fp32 product of the same bf16 inputs (relative error, with PyTorch's own bf16 GEMM's error
beside it). Also the host ms per call (``per_expert`` launches one GEMM per expert).

  python benchmarks/bench_wgrad.py --cases mixtral-8x7b,qwen1.5-moe-a2.7b --ep 2 --out DIR   # DIR/bench_wgrad.json
  python benchmarks/bench_wgrad.py --kernel-configs '[{"BN": 256}]' ...   # also time the kernel with BN=256
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from typing import NamedTuple

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_layer import CASES  # noqa: E402
from gpu_timing import dense_matmul_tflops, time_ms  # noqa: E402

from comet_megatron.ops.grouped_linear import (  # noqa: E402
    WGRAD_KERNEL_CONFIG,
    add_weight_grad_to_main_grad,
    add_weight_grad_to_main_grad_by_kernel,
)

VARIANTS = ("grouped_mm", "grouped+add", "per_expert", "kernel")
GIB = 1024**3


def expert_rows(tokens: int, topk: int, experts: int, ep: int, routing: str, seed: int = 0) -> list[int]:
    """Rows of each of rank 0's ``experts / ep`` local experts when every rank routes ``tokens`` tokens top-``topk``."""
    local = experts // ep
    if routing == "even":
        return [tokens * topk * ep // experts] * local
    gen = torch.Generator().manual_seed(seed)
    chosen = torch.rand(tokens * ep, experts, generator=gen).topk(topk, dim=1).indices
    return torch.bincount(chosen.flatten(), minlength=experts)[:local].tolist()


def rel_err(value: torch.Tensor, ref: torch.Tensor) -> float:
    """``|value - ref| / |ref|`` over ``[E, ...]`` tensors, one expert at a time (DSv3's fp32 gradients are 15 GiB)."""
    diff = sum(float((v.double() - r.double()).square().sum()) for v, r in zip(value, ref))
    norm = sum(float(r.double().square().sum()) for r in ref)
    return (diff / norm) ** 0.5


class WgradInputs(NamedTuple):
    """One weight gradient's operands on the GPU: expert-major bf16 rows ``x`` ``[N, in]`` and ``dy`` ``[N, out]``
    (random; ``dy`` scaled by 0.1), ``counts`` (int64 ``[E]``) and ``offs`` (their int32 cumulative sums, as
    ``torch._grouped_mm`` takes them), a zeroed fp32 ``main_grad`` ``[E, out, in]``, and the generator that drew
    them (for further draws in the same sequence)."""

    x: torch.Tensor
    dy: torch.Tensor
    counts: torch.Tensor
    offs: torch.Tensor
    main_grad: torch.Tensor
    gen: torch.Generator

    @classmethod
    def random(cls, rows: list[int], out_features: int, in_features: int, seed: int) -> WgradInputs:
        gen = torch.Generator(device="cuda").manual_seed(seed)
        x = torch.randn(sum(rows), in_features, device="cuda", dtype=torch.bfloat16, generator=gen)
        dy = torch.randn(sum(rows), out_features, device="cuda", dtype=torch.bfloat16, generator=gen) * 0.1
        counts = torch.tensor(rows, device="cuda")
        main_grad = torch.zeros(len(rows), out_features, in_features, device="cuda", dtype=torch.float32)
        return cls(x, dy, counts, counts.cumsum(0).to(torch.int32), main_grad, gen)


def bench_gemm(name: str, rows: list[int], out_features: int, in_features: int, args, tflops: float) -> dict:
    """One weight gradient ``dW_e = dy_e^T x_e`` for every local expert, by each variant."""
    total = sum(rows)
    x, dy, counts, offs, main_grad, gen = WgradInputs.random(
        rows, out_features, in_features, seed=len(rows) * 1000 + out_features
    )
    flops = 2.0 * total * out_features * in_features
    floor_ms = flops / (tflops * 1e12) * 1e3

    def grouped_mm():
        return torch._grouped_mm(dy.t(), x, offs=offs)

    def grouped_add():
        main_grad.add_(torch._grouped_mm(dy.t(), x, offs=offs))

    def per_expert():
        add_weight_grad_to_main_grad(main_grad, dy, x, rows)

    fns = {"grouped_mm": grouped_mm, "grouped+add": grouped_add, "per_expert": per_expert}
    variants = list(VARIANTS[:3])
    if args.per_expert_streams > 1:
        name_s = f"per_expert_{args.per_expert_streams}streams"
        fns[name_s] = lambda: add_weight_grad_to_main_grad(main_grad, dy, x, rows, streams=args.per_expert_streams)
        variants.append(name_s)
    for i, config in enumerate([{}] + args.kernel_configs):
        name_i = "kernel" if i == 0 else f"kernel#{i}"
        fns[name_i] = lambda config=config: add_weight_grad_to_main_grad_by_kernel(main_grad, dy, x, counts, config)
        variants.append(name_i)
    entry: dict = {"rows_per_expert": rows[0], "rows_max": max(rows), "rows": sum(rows), "experts": len(rows)}
    entry.update({"out": out_features, "in": in_features})
    entry["kernel_configs"] = [{**WGRAD_KERNEL_CONFIG, **c} for c in [{}] + args.kernel_configs]
    entry["floor_ms"] = round(floor_ms, 4)

    # Accuracy of one accumulation onto a non-zero main_grad, against fp32 products of the same bf16 inputs.
    start = torch.randn_like(main_grad, generator=gen)
    ref = start.clone()
    for e, (dy_e, x_e) in enumerate(zip(dy.split(rows), x.split(rows))):
        ref[e] += dy_e.t().float() @ x_e.float()
    pytorch_bf16 = start + grouped_mm().float()  # PyTorch's own bf16 GEMM, then the fp32 add
    entry["rel_err_bf16_gemm_then_add"] = rel_err(pytorch_bf16, ref)
    for variant in variants[1:]:
        main_grad.copy_(start)
        fns[variant]()
        entry[f"rel_err_{variant}"] = rel_err(main_grad, ref)
    del start, ref, pytorch_bf16

    for variant in variants:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        ms, host_ms = time_ms(fns[variant], args.iters, args.warmup)
        entry[variant] = {
            "ms": round(ms, 4),
            "host_ms": round(host_ms, 4),
            "TFLOPs": round(flops / (ms * 1e-3) / 1e12, 1),
            "x_floor": round(ms / floor_ms, 3),
            "extra_peak_GiB": round((torch.cuda.max_memory_allocated() - base) / GIB, 3),
        }
    entry["per_expert_vs_grouped+add"] = round(entry["grouped+add"]["ms"] / entry["per_expert"]["ms"], 3)
    entry["kernel_vs_grouped+add"] = round(entry["grouped+add"]["ms"] / entry["kernel"]["ms"], 3)
    print(
        f"  {name:4s} E={len(rows):3d} rows={rows[0]:6d} [{out_features}x{in_features}]  "
        + "  ".join(
            f"{v} {entry[v]['ms']:.3f} ms ({entry[v]['x_floor']:.2f}x, host {entry[v]['host_ms']:.2f})"
            for v in variants
        )
        + f"  err g+a {entry['rel_err_grouped+add']:.1e} pe {entry['rel_err_per_expert']:.1e}"
        + f" k {entry['rel_err_kernel']:.1e}",
        flush=True,
    )
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="mixtral-8x7b,qwen1.5-moe-a2.7b,qwen2-57b-a14b,phi3.5-moe,dsv3-like")
    parser.add_argument("--ep", type=int, default=2, help="EP size whose per-rank share is measured")
    parser.add_argument("--tokens", type=int, default=None, help="tokens per rank (default: the case's)")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", default=None, help="folder for bench_wgrad.json")
    parser.add_argument("--kernel-configs", type=json.loads, default=[], help="JSON list of tile overrides")
    parser.add_argument(
        "--per-expert-streams",
        type=int,
        default=1,
        help="N > 1 adds per_expert_<N>streams: the per-expert GEMMs round-robin over N CUDA streams",
    )
    parser.add_argument(
        "--routing",
        choices=("even", "random"),
        default="even",
        help="rows per expert: all equal (even), or counted from uniformly random top-k routing of every rank's tokens "
        "(random: the busiest expert holds more than the mean, as in training)",
    )
    parser.add_argument("--replot", nargs="+", metavar="JSON", help="only redraw the charts of these results")
    args = parser.parse_args()
    if args.replot:
        for path in args.replot:
            with open(path) as f:
                print(f"wrote {plot(json.load(f), os.path.splitext(path)[0] + '.png')}")
        return
    if not torch.cuda.is_available():
        sys.exit("bench_wgrad.py needs a CUDA GPU")

    tflops = dense_matmul_tflops("cuda", args.iters, 3)
    print(f"dense bf16 matmul: {tflops:.1f} TFLOP/s; EP={args.ep}", flush=True)
    results = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "ep": args.ep,
        "dense_TFLOPs": round(tflops, 1),
        "command": " ".join(sys.argv),
        "routing": args.routing,
        "cases": {},
    }
    for name in args.cases.split(","):
        case = CASES[name]
        tokens = args.tokens or case.tokens
        local = case.experts // args.ep
        rows = expert_rows(tokens, case.topk, case.experts, args.ep, args.routing)
        print(
            f"{name}: {local} local experts, {min(rows)}-{max(rows)} rows each, {sum(rows)} in all "
            f"({tokens} tokens per rank, {args.routing} routing)",
            flush=True,
        )
        try:
            results["cases"][name] = {
                "tokens": tokens,
                "fc1": bench_gemm("fc1", rows, 2 * case.ffn, case.hidden, args, tflops),
                "fc2": bench_gemm("fc2", rows, case.hidden, case.ffn, args, tflops),
            }
        except torch.OutOfMemoryError as exc:  # e.g. DSv3 at EP=1: 30 GiB per fp32 gradient, four copies here
            results["cases"][name] = {"tokens": tokens, "error": str(exc).splitlines()[0]}
            print(f"  {name}: out of memory, skipped", flush=True)
        torch.cuda.empty_cache()

    print(
        "\ncase                 gemm  grouped_mm     grouped+add    per_expert     kernel         (ms; x floor)"
        "  vs grouped+add: per_expert kernel"
    )
    for name, entry in results["cases"].items():
        for gemm in ("fc1", "fc2") if "error" not in entry else ():
            g = entry[gemm]
            print(
                f"{name:20s} {gemm:4s} "
                + "  ".join(f"{g[v]['ms']:7.3f} ({g[v]['x_floor']:.2f})" for v in VARIANTS)
                + f"  {g['per_expert_vs_grouped+add']:.2f}x {g['kernel_vs_grouped+add']:.2f}x"
            )
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "bench_wgrad.json")
        with open(path, "w") as f:
            json.dump(results, f, indent=1)
        print(f"wrote {path}")
        print(f"wrote {plot(results, os.path.join(args.out, 'bench_wgrad.png'))}")


def plot(results: dict, path: str) -> str:
    """Bars of ms per (case, GEMM) for each variant, the floor as a line over each group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(n, g) for n, e in results["cases"].items() if "error" not in e for g in ("fc1", "fc2")]
    first = results["cases"][groups[0][0]]["fc1"]
    configs = first.get("kernel_configs", [])  # results from before the kernel existed have none
    kernels = ["kernel"] + [f"kernel#{i}" for i in range(1, len(configs))]
    labels = dict(zip(VARIANTS[:3], VARIANTS[:3]))
    labels.update({v: v for v in first if v.startswith("per_expert_") and v.endswith("streams")})
    for name, config in zip(kernels, configs):
        changed = {k: v for k, v in config.items() if v != configs[0].get(k)}
        labels[name] = "kernel " + (" ".join(f"{k}={v}" for k, v in changed.items()) or "(default tile)")
    variants = list(labels)
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(groups)), 4.5))
    width = 0.8 / len(variants)
    for i, variant in enumerate(variants):
        ms = [results["cases"][n][g][variant]["ms"] for n, g in groups]
        ax.bar([x + i * width for x in range(len(groups))], ms, width, label=labels[variant])
    for x, (n, g) in enumerate(groups):
        floor = results["cases"][n][g]["floor_ms"]
        ax.hlines(floor, x - width / 2, x + 0.8 - width / 2, colors="black", linestyles="dashed")
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(groups))])
    ax.set_xticklabels([f"{n}\n{g}" for n, g in groups], fontsize=7)
    ax.set_ylabel("ms per weight gradient into fp32 main_grad")
    ax.set_title(
        f"Expert weight gradients summed into main_grad, one rank of EP={results['ep']} ({results['device']}); "
        "dashed: GEMM floor",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
