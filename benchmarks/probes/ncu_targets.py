#!/usr/bin/env python3
"""One launch of each named kernel inside an NVTX range, for Nsight Compute's hardware counters.

Timing variants (``bench_gemm_core.py``, ``bench_wgrad.py``) say how long a kernel takes; what limits it (L2 or HBM
bandwidth, the tensor pipes, issue stalls) needs counters. Each target builds its inputs, runs once to compile and warm
up, then once more inside the NVTX range ``ncu`` so that ``ncu --nvtx --nvtx-include ncu/`` profiles exactly that
launch (and nothing of the setup). Targets:

  fc1:CASE          dispatch ⊕ fc1's GEMM programs on rank 0 of two simulated ranks (flags already up: no wait), the
                    layer's default tiles (``bench_gemm_core.py``'s ``fc1``)
  gm_fc1:CASE       ``torch._grouped_mm`` of the same rows and weights (the cuBLAS/CUTLASS bar)
  wgrad:CASE        the accumulating weight-gradient kernel into fp32 ``main_grad``, fc1's gradient, EP=2 share,
                    random routing (``bench_wgrad.py``'s ``kernel``)
  gm_wgrad:CASE     ``torch._grouped_mm`` of the same bf16 gradient, no accumulation
  rmw:CASE          ``main_grad.add_(1.0)``: the read-modify-write alone

  ncu --nvtx --nvtx-include ncu/ --clock-control none --section SpeedOfLight ... \\
      python benchmarks/probes/ncu_targets.py wgrad:dsv3-like gm_wgrad:dsv3-like
  python benchmarks/probes/ncu_targets.py --list   # the targets and their shapes, without a GPU

Session 26 (one H200, ``benchmarks/results/s26/ncu/sol_call1.json``): ``wgrad:dsv3-like`` 10.68 ms with 16.8 GB read and
15.0 GB written (DRAM 62% of peak, L2 52%, tensor pipe 21%; the read-modify-write alone reaches 87%); ``fc1`` on
Mixtral 5.54 ms (tensor pipe 80.8%) against ``gm_fc1``'s 5.07 (93.4%); on DSv3-like both 3.72 ms. ``ncu_stalls.py`` says
where the warps wait.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.join(REPO_ROOT, "benchmarks"))

from bench_layer import CASES  # noqa: E402

KINDS = ("fc1", "gm_fc1", "wgrad", "gm_wgrad", "rmw")
EP = 2  # the issue's expert-parallel size: rank 0's share of every case


def parse_target(p: argparse.ArgumentParser, text: str) -> tuple[str, str]:
    kind, _, case = text.partition(":")
    if kind not in KINDS or case not in CASES:
        p.error(f"target {text!r}: expected KIND:CASE with KIND in {', '.join(KINDS)} and CASE in {', '.join(CASES)}")
    return kind, case


def fc1_runner(kind: str, case_name: str, tokens: int):
    from bench_gemm_core import GpuSetup

    gpu = GpuSetup.start(case_name, tokens, EP, 0, "ncu_targets.py needs a CUDA GPU")
    prob, cfg = gpu.prob, gpu.base
    plans, tables = prob.plans(cfg.block_m, cfg.own_rows_first)
    acts, preacts = prob.fc1_outputs(plans)
    common = dict(ep=EP, gated=True, activation="silu", config=cfg, grid=cfg.persistent_grid(gpu.num_sms))

    def fc1(r, mode):
        return prob.dispatch_fc1(r, plans, tables, acts, preacts, mode=mode, epoch=1, **common)

    for r in range(EP):
        fc1(r, 1)  # every rank's pushes: rank 0's rows and flags are in place before its GEMM programs run
    torch.cuda.synchronize()
    if kind == "fc1":
        return lambda: fc1(0, 2)
    rows = plans[0].recv_rows
    x_e = prob.views[0].received(rows, prob.hidden).clone()
    offs = torch.cumsum(plans[0].tokens_per_expert.to(prob.dev), 0).to(torch.int32)
    w1t = prob.w1[0].transpose(1, 2)
    return lambda: torch._grouped_mm(x_e, w1t, offs=offs)


def wgrad_runner(kind: str, case_name: str, tokens: int):
    from bench_wgrad import WgradInputs, expert_rows

    from comet_megatron.ops.grouped_linear import add_weight_grad_to_main_grad_by_kernel

    case = CASES[case_name]
    rows = expert_rows(tokens, case.topk, case.experts, EP, "random")
    g = WgradInputs.random(rows, 2 * case.ffn, case.hidden, seed=sum(rows))
    if kind == "wgrad":
        return lambda: add_weight_grad_to_main_grad_by_kernel(g.main_grad, g.dy, g.x, g.counts)
    if kind == "gm_wgrad":
        return lambda: torch._grouped_mm(g.dy.t(), g.x, offs=g.offs)
    return lambda: g.main_grad.add_(1.0)


def describe(kind: str, case_name: str, tokens: int) -> str:
    case = CASES[case_name]
    gemm = "fc1 [rows, H] x [2F, H]^T" if kind in ("fc1", "gm_fc1") else "fc1 weight gradient [2F, H] per expert"
    return (
        f"{kind}:{case_name}  {gemm}, H {case.hidden}, F {case.ffn}, {case.experts // EP} local experts of "
        f"{case.experts}, top-{case.topk}, {tokens} tokens per rank, EP={EP} share"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("targets", nargs="*", help="KIND:CASE (see the module docstring)")
    p.add_argument("--tokens", type=int, default=None, help="tokens per rank (default: the case's)")
    p.add_argument("--list", action="store_true", help="print what each target runs and exit")
    args = p.parse_args()
    targets = [parse_target(p, t) for t in args.targets]
    if args.list or not targets:
        for kind in KINDS:
            print(describe(kind, "mixtral-8x7b", args.tokens or CASES["mixtral-8x7b"].tokens))
        return
    if not torch.cuda.is_available():
        sys.exit("ncu_targets.py needs a CUDA GPU")
    for kind, case_name in targets:
        tokens = args.tokens or CASES[case_name].tokens
        runner = (fc1_runner if kind in ("fc1", "gm_fc1") else wgrad_runner)(kind, case_name, tokens)
        runner()  # compile and warm up outside the profiled range
        torch.cuda.synchronize()
        torch.cuda.nvtx.range_push("ncu")
        runner()
        torch.cuda.synchronize()
        torch.cuda.nvtx.range_pop()
        print(describe(kind, case_name, tokens), flush=True)


if __name__ == "__main__":
    main()
