#!/usr/bin/env python3
"""The dispatch kernels at EP=2 with the peer rank's pushes emulated on one GPU: how long rank 0's GEMM waits for
remote rows in each M-tile order (``KernelConfig.own_rows_first``), and how that grows when the peer starts late.
``--layer fc1``: layer0 (dispatch ⊕ fc1); ``--layer fc2_dgrad``: the backward's dispatch ⊕ fc2 data-gradient (the
output-gradient rows pushed the same way, then the activation backward).

Why on one GPU: the question needs the arrival order, not NVLink itself, and 2-GPU machines are not always lent.
Two ranks are simulated on the device (:func:`comet_megatron.fused_ops.single_process_views`). Every iteration,
with a fresh epoch and rank 0's receive rows poisoned (NaN) beforehand:

* stream B, after ``skew`` µs idle (``torch.cuda._sleep``): rank 1's pushes (``MODE=1``), its whole unit list in its
  plan's order — with ``own_rows_first`` its local units before its remote ones, expert-major interleaved per expert
  (``fused_plan.build_plan``) — on ``peer_programs`` programs. Their number sets the pace: calibrated first, per case,
  so that the list alone takes what the real rank's would with its local gathers done at its own push-program count
  and its remote rows sent at ``--link-gbps`` one after the other (default: the 314 GB/s of remote writes measured
  between the two H200s, ``../shared/NOTES.md``). The sum is the slow end: on the real link the two overlap in part,
  so the rows arrive no later than here — a bias against whichever order needs the peer's rows sooner (expert-major).
* stream A: rank 0's whole dispatch kernel (its pushes and the GEMM, ``MODE=0``) on the layer's persistent grid
  less ``peer_programs`` (so that the peer's programs always find SMs), its tiles waiting on their flags.

Timed: from the start of both to the end of both (the host's launches hidden behind a sleep on stream A). Next to it,
per order and on the same grid: ``no_wait``, rank 0's GEMM with every flag already raised (``MODE=2``: the core
alone), and ``peer_ready``, rank 0's whole dispatch kernel with the peer's rows delivered beforehand (its own pushes
timed) — a skew column minus ``peer_ready`` is what waiting on the peer costs. Every emulated run's outputs are
compared bit for bit with ``no_wait``'s (a tile that read its rows before they arrived would carry the poison), and
``no_wait``'s with PyTorch. All launches run with the kernels' debug spin bound (``DEBUG``), timed ones included, so
that a wrong wait fails instead of hanging; the GEMM cores' own rates are ``bench_gemm_core.py``'s to report.

Left out: NVLink itself (the peer's rows go through HBM at the calibrated pace), rank 0's own remote pushes (at HBM
speed instead of the link's: they free its push programs sooner in both orders).

  python benchmarks/bench_arrival.py --case dsv3-like --skews-us 0,100,300 --out DIR  # DIR/bench_arrival_<case>.json
  TRITON_INTERPRET=1 python benchmarks/bench_arrival.py --check   # the launch plumbing on CPU (no timing)
  python benchmarks/bench_arrival.py --replot OUT.png FILE.json [FILE.json ...]   # one chart, a panel per case
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_gemm_core import (  # noqa: E402
    GpuSetup,
    Problem,
    expected_received,
    fc1_reference,
    kernel_configs,
    rel_err,
    swiglu_backward,
)
from bench_layer import CASES, Case  # noqa: E402

from comet_megatron.fused_ops import dispatch_dgrad, dispatch_fc1  # noqa: E402
from comet_megatron.fused_plan import FusedPlan  # noqa: E402
from comet_megatron.tuning import KernelConfig  # noqa: E402

PEER, TIMED = 1, 0
NVLINK_WRITE_GBPS = 314.0  # ../shared/NOTES.md: remote row writes between the two H200s
# the table's ratios: peer_ready to no_wait, the skew columns to peer_ready (what waiting on the peer adds)
RATIO_TO = {"peer_ready": "no_wait"}
LAYERS = ("fc1", "fc2_dgrad")  # dispatch ⊕ fc1 (forward), dispatch ⊕ fc2 data-gradient (backward)
LAYER_TITLES = {"fc1": "layer0 (dispatch ⊕ fc1)", "fc2_dgrad": "dispatch ⊕ fc2 data-gradient"}


def units_to(plan: FusedPlan, dest: int) -> FusedPlan:
    """``plan`` with only its units pushing to rank ``dest``, in the same order (the rest of the plan shared)."""
    part = copy.copy(plan)
    part.units = plan.units[plan.units[:, 0] == dest]
    return part


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--case", default="dsv3-like", choices=sorted(CASES))
    p.add_argument("--layer", default="fc1", choices=LAYERS, help="fc1: layer0; fc2_dgrad: the backward's dispatch")
    p.add_argument("--tokens", type=int, default=None, help="tokens per simulated rank (default: the case's)")
    p.add_argument("--skews-us", default="0,100,300", help="comma-separated delays of the peer's start, µs")
    p.add_argument("--link-gbps", type=float, default=NVLINK_WRITE_GBPS, help="remote-write rate to emulate")
    p.add_argument("--peer-programs", type=int, default=None, help="skip the calibration: the peer's programs")
    p.add_argument("--configs", default='[{"own_rows_first": true}, {"own_rows_first": false}]',
                   help="JSON list of KernelConfig overrides of the layer's default")  # fmt: skip
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="directory for bench_arrival_<case>[_fc2_dgrad].json")
    p.add_argument("--check", action="store_true", help="CPU, TRITON_INTERPRET=1: the launches' results, no timing")
    args = p.parse_args(argv)
    try:
        args.skews = [float(s) for s in args.skews_us.split(",") if s.strip()]
    except ValueError:
        p.error(f"--skews-us {args.skews_us!r}: give comma-separated numbers of microseconds, e.g. 0,100,300")
    if not args.skews or min(args.skews) < 0:
        p.error("--skews-us needs at least one delay, none negative")
    if args.link_gbps <= 0:
        p.error("--link-gbps must be positive")
    if args.peer_programs is not None and args.peer_programs < 1:
        p.error("--peer-programs must be >= 1")
    from bench_layer import parse_comet_configs

    args.overrides = parse_comet_configs(p, args.configs) or [{}]
    return args


class Emulation:
    """One case, one kernel configuration and one dispatch kernel (``layer``: dispatch ⊕ fc1, or the backward's
    dispatch ⊕ fc2 data-gradient, which pushes output-gradient rows the same way) on two simulated ranks."""

    def __init__(self, prob: Problem, cfg: KernelConfig, grid: int, epoch0: int, layer: str = "fc1"):
        assert layer in LAYERS, layer
        self.prob, self.cfg, self.grid, self.layer = prob, cfg, grid, layer
        self.comm_programs = cfg.comm_programs if layer == "fc1" else cfg.dgrad_comm_programs
        self.plans, self.tables = prob.plans(cfg.block_m, cfg.own_rows_first)
        peer_plan = self.plans[PEER]
        self.peer_local = units_to(peer_plan, PEER).device_tables(prob.dev)
        self.remote_bytes = int(units_to(peer_plan, TIMED).units[:, 5].sum()) * prob.hidden * 2
        f, dev = prob.ffn, prob.dev
        self.act = [torch.full((p.recv_rows, f), float("nan"), dtype=torch.bfloat16, device=dev) for p in self.plans]
        # fc1's outputs for the forward; for the backward, its saved pre-activation (any finite values will do)
        self.preact = [
            torch.full((p.recv_rows, 2 * f), float("nan"), dtype=torch.bfloat16, device=dev)
            if layer == "fc1"
            else torch.randn(p.recv_rows, 2 * f, device=dev).bfloat16()
            for p in self.plans
        ]
        self.outputs: tuple[torch.Tensor, ...] = ()  # rank 0's latest GEMM outputs
        self.epoch = epoch0

    def next_epoch(self) -> int:
        self.epoch += 1
        return self.epoch

    def launch(self, rank: int, tables: dict, mode: int, grid: int, epoch: int, config: KernelConfig | None = None):
        """``rank``'s dispatch kernel with the given unit tables (``MODE`` 0: pushes + GEMM, 1: pushes, 2: GEMM),
        debug spin bound on."""
        p = self.prob
        common = dict(
            epoch=epoch, ep_rank=rank, ep=p.ep, gated=True, activation="silu", config=config or self.cfg, debug=True
        )
        if self.layer == "fc1":
            out = dispatch_fc1(
                p.views[rank], self.plans[rank], tables, p.x[rank], p.token_of_slot[rank], p.probs_of_slot[rank],
                p.w1[rank], grid=grid, mode=mode, save_preact=True, act_out=self.act[rank],
                preact_out=self.preact[rank], **common,
            )  # fmt: skip
        else:
            out = dispatch_dgrad(
                p.views[rank], self.plans[rank], tables, p.grad_out[rank], p.token_of_slot[rank],
                p.probs_of_slot[rank], p.w2[rank], self.preact[rank], grid=grid, mode=mode, **common,
            )  # fmt: skip
        if rank == TIMED and mode != 1:
            self.outputs = out
        return out

    def poison(self) -> None:
        """NaN into rank 0's receive rows and latest outputs, outside any timed window: a tile that reads rows before
        they arrive, or an output element nobody writes, shows. (dispatch_dgrad allocates its outputs: for it the
        receive rows are what is poisoned.)"""
        rows = self.plans[TIMED].recv_rows
        self.prob.views[TIMED].recv[:rows].fill_(float("nan"))
        self.prob.views[TIMED].recv_probs[:rows].fill_(float("nan"))
        for t in self.outputs:
            t.fill_(float("nan"))

    def peer_pushes(self, tables: dict, programs: int, epoch: int):
        """Rank 1's units in ``tables`` pushed by exactly ``programs`` programs (a push program is one whose id is
        below the configuration's push count, so the count is set to match)."""
        paced = dataclasses.replace(self.cfg, comm_programs=programs, dgrad_comm_programs=programs)
        return self.launch(PEER, tables, mode=1, grid=programs, epoch=epoch, config=paced)

    def all_pushed_then_gemm(self, epoch: int):
        """Every flag of ``epoch`` raised first, then rank 0's GEMM alone: the no-wait reference."""
        self.peer_pushes(self.tables[PEER], self.comm_programs, epoch)
        self.launch(TIMED, self.tables[TIMED], mode=1, grid=self.grid, epoch=epoch)
        self.launch(TIMED, self.tables[TIMED], mode=2, grid=self.grid, epoch=epoch)

    def errors(self) -> int:
        return int(self.prob.views[TIMED].error.item()) + int(self.prob.views[PEER].error.item())


def error_vs_torch(emu: Emulation, outputs: tuple[torch.Tensor, ...]) -> float:
    """Relative error of rank 0's main output (fc1: ``act``; fc2 data-gradient: ``[d_gate | d_linear]``) against
    PyTorch on the rows the pushes must have delivered."""
    plan, prob = emu.plans[TIMED], emu.prob
    offs = torch.cumsum(plan.tokens_per_expert.to(prob.dev), 0).to(torch.int32)
    if emu.layer == "fc1":
        x_e, p_e = expected_received(prob, plan, prob.x)
        return rel_err(outputs[0], fc1_reference(x_e, p_e, prob.w1[TIMED], offs)[1])
    dy_e, p_e = expected_received(prob, plan, prob.grad_out)
    d_gate, d_lin, _ = swiglu_backward(torch._grouped_mm(dy_e, prob.w2[TIMED], offs=offs), emu.preact[TIMED], p_e)
    return rel_err(outputs[0], torch.cat([d_gate, d_lin], dim=-1))


def check(args) -> dict:
    """CPU, interpreter: the emulation's launch sequence (the peer's pushes, then rank 0's MODE=0) leaves rank 0's
    outputs equal to the no-wait path's and to PyTorch's, for both dispatch kernels and both M-tile orders; the unit
    split partitions the peer's units in order."""
    assert os.environ.get("TRITON_INTERPRET") == "1", "--check runs the kernels' logic: set TRITON_INTERPRET=1"
    dev = torch.device("cpu")
    case = Case(hidden=32, ffn=16, experts=4, topk=2, tokens=40)
    prob = Problem(case, case.tokens, 2, dev, args.seed)
    report, epoch0 = {}, 10
    for layer in LAYERS:
        for own_first in (True, False):
            cfg = dataclasses.replace(
                KernelConfig(), comm_programs=2, dgrad_comm_programs=2, dgrad_block_n=64, own_rows_first=own_first
            )
            emu = Emulation(prob, cfg, grid=4, epoch0=epoch0, layer=layer)
            epoch0 += 10
            units = emu.plans[PEER].units
            remote, local = units_to(emu.plans[PEER], TIMED).units, units_to(emu.plans[PEER], PEER).units
            partition = remote.shape[0] + local.shape[0] == units.shape[0] and min(remote.shape[0], local.shape[0]) > 0
            in_order = all(torch.equal(part, units[units[:, 0] == d]) for part, d in ((remote, TIMED), (local, PEER)))
            emu.poison()
            epoch = emu.next_epoch()
            # the interpreter runs one launch, and one program, at a time: the peer's whole list first, then rank 0
            # (whose push programs have lower ids than its GEMM programs), so nothing waits here — this checks the
            # launches' plumbing; the waiting itself is the GPU run's
            emu.peer_pushes(emu.tables[PEER], 1, epoch)
            emu.launch(TIMED, emu.tables[TIMED], mode=0, grid=3, epoch=epoch)
            emulated = tuple(t.clone() for t in emu.outputs)
            emu.poison()
            emu.all_pushed_then_gemm(emu.next_epoch())
            report[f"{layer}/{'own_rows_first' if own_first else 'expert_major'}"] = {
                "units_split_partitions": bool(partition),
                "units_split_keeps_order": bool(in_order),
                "rows": emu.plans[TIMED].recv_rows,
                "emulated_equals_no_wait": all(torch.equal(a, b) for a, b in zip(emulated, emu.outputs, strict=True)),
                "rel_err_vs_torch": error_vs_torch(emu, emulated),
                "debug_errors": emu.errors(),
            }
    return report


class CudaTimer:
    """Timing of work issued on two streams, the host's launch cost hidden behind a sleep on the first."""

    def __init__(self, dev):
        self.main = torch.cuda.current_stream(dev)
        self.side = torch.cuda.Stream(dev)
        self.cycles_per_us = self._calibrate_sleep()

    @staticmethod
    def _calibrate_sleep() -> float:
        cycles = 20_000_000
        torch.cuda._sleep(1000)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.cuda._sleep(cycles)
        end.record()
        end.synchronize()
        return cycles / (start.elapsed_time(end) * 1e3)

    def sleep_us(self, us: float) -> None:
        if us > 0:
            torch.cuda._sleep(int(us * self.cycles_per_us))

    def time_ms(self, main_work, side_work=None, side_delay_us: float = 0.0) -> float:
        """GPU ms from a common start until ``main_work`` (current stream) and ``side_work`` (side stream, after
        ``side_delay_us``) have both finished."""
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        self.sleep_us(2000)  # covers the launches below: the GPU starts the timed work without waiting for the host
        start.record(self.main)
        if side_work is not None:
            self.side.wait_event(start)
            with torch.cuda.stream(self.side):
                self.sleep_us(side_delay_us)
                side_work()
        main_work()
        if side_work is not None:
            self.main.wait_stream(self.side)
        end.record(self.main)
        end.synchronize()
        return start.elapsed_time(end)

    def median_ms(self, n: int, warmup: int, *a, **kw) -> float:
        for _ in range(warmup):
            self.time_ms(*a, **kw)
        return statistics.median(self.time_ms(*a, **kw) for _ in range(n))


def calibrate_peer(emu: Emulation, timer: CudaTimer, link_gbps: float, iters: int) -> dict:
    """Push programs for the peer whose whole unit list takes closest (ratio in log) to the real rank's: its local
    units alone at its push-program count (measured here) plus its remote bytes at ``link_gbps``."""
    local_ms = timer.median_ms(
        iters, 1, lambda: emu.peer_pushes(emu.peer_local, emu.comm_programs, emu.next_epoch())
    )  # fmt: skip
    target_ms = local_ms + emu.remote_bytes / link_gbps / 1e6
    peer_ms = {}
    for programs in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48):
        peer_ms[programs] = timer.median_ms(
            iters, 1, lambda n=programs: emu.peer_pushes(emu.tables[PEER], n, emu.next_epoch())
        )  # fmt: skip
    best = min(peer_ms, key=lambda n: abs(math.log(peer_ms[n] / target_ms)))
    return {"programs": best, "target_ms": target_ms, "local_ms": local_ms, "peer_ms": peer_ms}


def measure(emu: Emulation, timer: CudaTimer, peer_programs: int, args) -> dict:
    """One configuration: the no-wait GEMM, the dispatch kernel with the peer's rows ready, then with the peer
    emulated at every skew (median ms each; every emulated run's outputs checked)."""
    grid = emu.grid

    def gemm_alone(epoch):
        return emu.launch(TIMED, emu.tables[TIMED], 2, grid, epoch)

    def dispatch_kernel(epoch):
        return emu.launch(TIMED, emu.tables[TIMED], 0, grid, epoch)

    def peer(epoch, programs=peer_programs):
        return emu.peer_pushes(emu.tables[PEER], programs, epoch)

    res = {"config": dataclasses.asdict(emu.cfg), "grid": grid, "ms": {}}
    no_wait = []
    for _ in range(args.warmup + args.iters):  # every flag raised beforehand; the pushes are not timed
        emu.poison()
        epoch = emu.next_epoch()
        peer(epoch, emu.comm_programs)
        emu.launch(TIMED, emu.tables[TIMED], mode=1, grid=grid, epoch=epoch)
        no_wait.append(timer.time_ms(lambda e=epoch: gemm_alone(e)))
    res["ms"]["no_wait"] = statistics.median(no_wait[args.warmup :])
    reference = tuple(t.clone() for t in emu.outputs)
    res["rel_err_vs_torch"] = error_vs_torch(emu, reference)
    peer_ready = []
    for _ in range(args.warmup + args.iters):  # the peer's rows delivered beforehand; rank 0's own pushes timed
        epoch = emu.next_epoch()
        peer(epoch, emu.comm_programs)
        peer_ready.append(timer.time_ms(lambda e=epoch: dispatch_kernel(e)))
    res["ms"]["peer_ready"] = statistics.median(peer_ready[args.warmup :])
    mismatches = 0
    for skew in args.skews:
        times = []
        for _ in range(args.warmup + args.iters):
            emu.poison()
            epoch = emu.next_epoch()
            times.append(timer.time_ms(lambda e=epoch: dispatch_kernel(e), lambda e=epoch: peer(e), skew))
            mismatches += not all(torch.equal(a, b) for a, b in zip(emu.outputs, reference, strict=True))
        res["ms"][f"skew_{skew:g}us"] = statistics.median(times[args.warmup :])
    res["emulated_runs_not_exact"] = mismatches
    res["outputs_exact"] = mismatches == 0
    res["debug_errors"] = emu.errors()
    return res


def run(args) -> dict:
    gpu = GpuSetup.start(
        args.case,
        args.tokens,
        2,
        args.seed,
        "bench_arrival.py needs a CUDA GPU (or --check with TRITON_INTERPRET=1 on CPU)",
    )
    timer = CudaTimer(gpu.dev)
    results, calibration, epoch = [], None, 1
    for overrides, cfg in zip(args.overrides, kernel_configs(gpu.base, args.overrides), strict=True):
        emu = Emulation(gpu.prob, cfg, grid=cfg.persistent_grid(gpu.num_sms), epoch0=epoch, layer=args.layer)
        if calibration is None:
            calibration = (
                {"programs": args.peer_programs}
                if args.peer_programs
                else calibrate_peer(emu, timer, args.link_gbps, args.iters)
            )
        emu.grid -= calibration["programs"]  # the peer's programs always find SMs: no wait can deadlock
        results.append({"overrides": overrides} | measure(emu, timer, calibration["programs"], args))
        epoch = emu.epoch + 1  # epochs never repeat within the run
    return gpu.report_head("bench_arrival") | {
        "layer": args.layer,
        "recv_rows_rank0": emu.plans[TIMED].recv_rows,
        "peer_remote_mb": emu.remote_bytes / 1e6,
        "link_gbps_target": args.link_gbps,
        "peer": calibration,
        "skews_us": args.skews,
        "configs": results,
        "command": " ".join(sys.argv),
    }


def plot(reports: list[dict], path: str) -> str:
    """One panel per case: the dispatch kernel's ms against the peer's delay, one line per configuration, its
    ``peer_ready`` (dashed) and ``no_wait`` (dotted) levels."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no chart written"
    fig, axes = plt.subplots(1, len(reports), figsize=(4.2 * len(reports), 4), squeeze=False)
    for ax, report in zip(axes[0], reports):
        for i, res in enumerate(report["configs"]):
            color = f"C{i}"
            label = json.dumps(res["overrides"]) if res["overrides"] else "default"
            ms = [res["ms"][f"skew_{s:g}us"] for s in report["skews_us"]]
            ax.plot(report["skews_us"], ms, "o-", color=color, label=label)
            ax.axhline(res["ms"]["peer_ready"], color=color, linestyle="--", linewidth=0.8)
            ax.axhline(res["ms"]["no_wait"], color=color, linestyle=":", linewidth=0.8)
        ax.set_title(f"{report['case']} ({report['shape']['tokens']} tok/rank)", fontsize=9)
        ax.set_xlabel("peer's start delay, µs")
        ax.set_ylabel(f"{LAYER_TITLES[report.get('layer', 'fc1')]} ms")
        ax.set_ylim(bottom=0)
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle(
        f"{LAYER_TITLES[reports[0].get('layer', 'fc1')]} at EP=2, peer emulated on one {reports[0]['device']} "
        "(dashed: peer's rows ready; dotted: GEMM alone)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"chart written: {path}"


def main(argv=None) -> None:
    if argv is None and len(sys.argv) > 3 and sys.argv[1] == "--replot":
        reports = []
        for name in sys.argv[3:]:
            with open(name) as fh:
                reports.append(json.load(fh))
        print(plot(reports, sys.argv[2]))
        return
    args = parse_args(argv)
    if args.check:
        print(json.dumps(check(args)))
        return
    report = run(args)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        suffix = "" if args.layer == "fc1" else f"_{args.layer}"
        path = os.path.join(args.out, f"bench_arrival_{args.case}{suffix}.json")
        with open(path, "w") as fh:
            json.dump(report, fh, indent=1)
        print(plot([report], os.path.splitext(path)[0] + ".png"))
    peer = report["peer"]
    pace = (
        f"alone {peer['peer_ms'][peer['programs']]:.3f} ms vs target {peer['target_ms']:.3f} "
        f"(local units {peer['local_ms']:.3f} + {report['peer_remote_mb']:.0f} MB at "
        f"{report['link_gbps_target']:.0f} GB/s)"
        if "target_ms" in peer
        else "not calibrated"
    )
    print(
        f"\n{report['case']}, {report['layer']}, {report['shape']['tokens']} tokens/rank, EP 2 emulated on "
        f"{report['device']}; peer on {peer['programs']} programs, its pushes {pace}"
    )
    cols = ["no_wait", "peer_ready"] + [f"skew_{s:g}us" for s in report["skews_us"]]
    print(f"{'config':<28} " + " ".join(f"{c:>14}" for c in cols) + "  exact  err vs torch")
    for res in report["configs"]:
        ms = res["ms"]
        cells = [f"{ms[c]:7.3f}" + ("" if c == "no_wait" else f" {ms[c] / ms[RATIO_TO.get(c, 'peer_ready')]:5.2f}x")
                 for c in cols]  # fmt: skip
        label = json.dumps(res["overrides"])[:28]
        ok = res["outputs_exact"] and res["debug_errors"] == 0
        print(f"{label:<28} " + " ".join(f"{c:>14}" for c in cells)
              + f"  {ok!s:5}  {res['rel_err_vs_torch']:.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
