"""Probe: the warp-specialized fc1 core on 2-CTA clusters sharing each weight tile by TMA multicast (Triton >= 3.9).

Question it answers (``notes/next-steps.md`` §1f): the Gluon fc1 core (``gluon_ws_fc1.py``) runs its main loop
10-13% behind cuBLAS (session 17). cuBLAS's Hopper kernels run on 2-CTA clusters that fetch each B tile once for
both CTAs. Does the same here — two CTAs computing the two 128-row halves of a 256-row block of one expert, the
gate and linear weight tiles loaded once and multicast into both — close that gap?

The kernel is ``gluon_ws_fc1``'s (``EPILOGUE=1``: masked stores from the MMA registers, SwiGLU·prob, ``[gate | lin]``
saved) with these changes:

- work items are (row pair, N-tile): a pair is two consecutive 128-row M-tiles of one expert (``pair_table``; an
  expert with an odd tile count ends in a half-empty pair whose second half computes rows of the next expert and
  stores none of them);
- A is one ``[256, BK]`` TMA box split over the cluster (CGA basis ``[[1, 0]]``: each CTA loads its 128 rows); the
  weight boxes are replicated (``[[0, 0]]``) and, with ``multicast=True``, CTA 0 alone issues them for both;
- a stage is released twice: to the CTA's own ``empty`` barrier (its loader refills its A half) and, with
  multicast, to the pair's ``pair_empty`` barrier, which lives in CTA 0 (``allocate_mbarrier(two_ctas=True)``: both
  CTAs' arrivals land there and only CTA 0 waits on it) — CTA 0 multicasts into CTA 1's stage only after CTA 1 has
  read it.

``MULTICAST=False`` is the control: same pairs and clusters, each CTA loading the weight tiles itself and releasing
its stages to itself only. (It must not use the pair release: CTA 1, refilling its own weight tiles, can run a phase
ahead of CTA 0 and complete a phase of CTA 0's count-2 barrier alone — a race, then a hang, seen on the device.)
``ctas=1`` runs the same kernel on single CTAs, one M-tile per item.

Learned compiling (session 20, Triton 3.9 here, sm_90): ``mbarrier.arrive(bar, from_cta=0)`` on a per-CTA barrier is
*CTA 0 arriving on every CTA's copy* (a broadcast), not every CTA arriving on CTA 0's — session 19's compile probe
misread it; the release to CTA 0 is a ``two_ctas`` barrier.

Not imported by the package. Runs under the carried Triton 3.9 on the device (``notes/device/triton39.sh``):

  run39 python benchmarks/probes/gluon39_ws_fc1_cluster.py --cases mixtral-8x7b --tokens 4096 \\
      --variants '[{"ctas": 1}, {"ctas": 2}, {"ctas": 2, "multicast": false}]' --out DIR
  python benchmarks/probes/gluon39_ws_fc1_cluster.py --compile-only   # no GPU: compiles for sm_90 and checks the PTX
  python benchmarks/probes/gluon39_ws_fc1_cluster.py --replot FILE.json   # chart of a run (FILE.png)
"""

from __future__ import annotations

import os
import sys

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import gluon_ws_fc1  # noqa: E402
from gluon_ws_fc1 import _epilogue_masked  # noqa: E402

from comet_megatron.kernels.tiles import grouped_tile  # noqa: E402


@gluon.jit
def _pair_load_partition(a_desc, w_desc, bufs, bars, pairs_ptr, num_pairs, probs_ptr, act_ptr, preact_ptr, F, H,
                         GROUP_M: gl.constexpr, MULTICAST: gl.constexpr):  # fmt: skip
    a_bufs, g_bufs, l_bufs = bufs
    ready_bars, empty_bars, pair_empty_bars = bars
    STAGES: gl.constexpr = a_bufs.shape[0]
    BN: gl.constexpr = w_desc.block_type.shape[0]
    BK: gl.constexpr = a_desc.block_type.shape[1]
    nbytes: gl.constexpr = a_desc.nbytes_per_cta + 2 * w_desc.nbytes_per_cta
    num_n = gl.cdiv(F, BN)
    num_items = num_pairs * num_n
    step = 0
    for item in range(gl.program_id(0), num_items, gl.num_programs(0)):
        pair, n = grouped_tile(item, num_pairs, num_n, GROUP_M)
        expert = gl.load(pairs_ptr + pair * 3)
        row0 = gl.load(pairs_ptr + pair * 3 + 1)
        w_row0 = expert * (2 * F) + n * BN
        for k in range(0, H, BK):
            s = step % STAGES
            free_phase = ((step // STAGES) & 1) ^ 1
            mbarrier.wait(empty_bars.index(s), free_phase)  # this CTA's consumers are done with its A half
            if MULTICAST:  # (CTA 0 only) both CTAs are done with the weights
                mbarrier.wait(pair_empty_bars.index(s), free_phase)
            bar = ready_bars.index(s)
            mbarrier.expect(bar, nbytes)
            tma.async_load(a_desc, [row0, k], bar, a_bufs.index(s))
            tma.async_load(w_desc, [w_row0, k], bar, g_bufs.index(s), multicast=MULTICAST)
            tma.async_load(w_desc, [w_row0 + F, k], bar, l_bufs.index(s), multicast=MULTICAST)
            step += 1


@gluon.jit
def _pair_mma_partition(a_desc, w_desc, bufs, bars, pairs_ptr, num_pairs, probs_ptr, act_ptr, preact_ptr, F, H,
                        GROUP_M: gl.constexpr, MULTICAST: gl.constexpr,
                        CGA_M: gl.constexpr):  # fmt: skip
    a_bufs, g_bufs, l_bufs = bufs
    ready_bars, empty_bars, pair_empty_bars = bars
    STAGES: gl.constexpr = a_bufs.shape[0]
    BM: gl.constexpr = a_desc.block_type.shape[0]  # the pair's rows, both CTAs
    BN: gl.constexpr = w_desc.block_type.shape[0]
    BK: gl.constexpr = a_desc.block_type.shape[1]
    # each CTA's two consumer warpgroups stacked along M (64 rows each), the CTAs stacked along M
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[gl.num_warps(), 1], instr_shape=[16, BN, 16], cga_layout=CGA_M
    )
    num_n = gl.cdiv(F, BN)
    num_items = num_pairs * num_n
    step = 0
    for item in range(gl.program_id(0), num_items, gl.num_programs(0)):
        pair, n = grouped_tile(item, num_pairs, num_n, GROUP_M)
        row0 = gl.load(pairs_ptr + pair * 3 + 1)
        row1 = gl.load(pairs_ptr + pair * 3 + 2)
        acc_g = gl.zeros((BM, BN), gl.float32, acc_layout)
        acc_l = gl.zeros((BM, BN), gl.float32, acc_layout)
        for k in range(0, H, BK):
            s = step % STAGES
            mbarrier.wait(ready_bars.index(s), (step // STAGES) & 1)
            a = a_bufs.index(s)
            acc_g = warpgroup_mma(a, g_bufs.index(s).permute((1, 0)), acc_g, is_async=True)
            acc_l = warpgroup_mma(a, l_bufs.index(s).permute((1, 0)), acc_l, is_async=True)
            # this stage's two wgmmas stay in flight; the previous stage's are done, so its buffers are released
            acc_g, acc_l = warpgroup_mma_wait(2, deps=(acc_g, acc_l))
            prev = (step + STAGES - 1) % STAGES
            mbarrier.arrive(empty_bars.index(prev), pred=k > 0)
            if MULTICAST:
                mbarrier.arrive(pair_empty_bars.index(prev), pred=k > 0)
            step += 1
        acc_g, acc_l = warpgroup_mma_wait(0, deps=(acc_g, acc_l))
        prev = (step + STAGES - 1) % STAGES
        mbarrier.arrive(empty_bars.index(prev))
        if MULTICAST:
            mbarrier.arrive(pair_empty_bars.index(prev))
        _epilogue_masked(acc_g, acc_l, probs_ptr, act_ptr, preact_ptr, row0, row1, n, F, BM, BN, acc_layout)


@gluon.jit
def ws_fc1_cluster_kernel(
    a_desc,  # TMA over the receive buffer [R_cap, H] bf16, block [256, BK] split over the 2 CTAs
    w_desc,  # TMA over W1 viewed [E * 2F, H] bf16, block [BN, BK] replicated in both CTAs
    pairs_ptr,  # [num_pairs, 3] int32: expert, first row, end row (exclusive) of a <= 256-row block of one expert
    num_pairs,
    probs_ptr,  # [R] fp32
    act_ptr,  # [R, F] bf16 out
    preact_ptr,  # [R, 2F] bf16 out
    F,
    H,
    STAGES: gl.constexpr,
    GROUP_M: gl.constexpr,  # pairs per raster group
    MULTICAST: gl.constexpr,
    LOADER_REGS: gl.constexpr,
):
    BK: gl.constexpr = a_desc.block_type.shape[1]
    BN: gl.constexpr = w_desc.block_type.shape[0]
    dtype: gl.constexpr = a_desc.dtype
    gl.static_assert(gl.num_ctas() <= 2, "launch with num_ctas=2 (or 1: the same kernel without clusters)")
    CGA_M: gl.constexpr = [[1, 0]] if gl.num_ctas() == 2 else []
    a_bufs = gl.allocate_shared_memory(dtype, [STAGES, a_desc.block_type.shape[0], BK], a_desc.layout)
    g_bufs = gl.allocate_shared_memory(dtype, [STAGES, BN, BK], w_desc.layout)
    l_bufs = gl.allocate_shared_memory(dtype, [STAGES, BN, BK], w_desc.layout)
    ready_bars = mbarrier.allocate_mbarrier(batch=STAGES)
    empty_bars = mbarrier.allocate_mbarrier(batch=STAGES)
    for i in gl.static_range(STAGES):
        mbarrier.init(ready_bars.index(i), count=1)
        mbarrier.init(empty_bars.index(i), count=1)
    if MULTICAST:
        pair_empty_bars = mbarrier.allocate_mbarrier(batch=STAGES, two_ctas=True)
        for i in gl.static_range(STAGES):
            mbarrier.init(pair_empty_bars.index(i), count=1)
    else:
        pair_empty_bars = empty_bars  # unused
    fence_async_shared()
    bufs = (a_bufs, g_bufs, l_bufs)
    bars = (ready_bars, empty_bars, pair_empty_bars)
    gl.warp_specialize(
        [
            (_pair_mma_partition, (a_desc, w_desc, bufs, bars, pairs_ptr, num_pairs, probs_ptr, act_ptr, preact_ptr,
                                   F, H, GROUP_M, MULTICAST, CGA_M)),
            (_pair_load_partition, (a_desc, w_desc, bufs, bars, pairs_ptr, num_pairs, probs_ptr, act_ptr, preact_ptr,
                                    F, H, GROUP_M, MULTICAST)),
        ],
        [1],
        [LOADER_REGS],
    )  # fmt: skip


def pair_table(mtiles, num_mtiles: int, block_m: int):
    """``[P, 3]`` int32 (expert, first row, end row) on ``mtiles``' device: each expert's M-tiles (rows of the
    plan's ``[expert, first row, end row, tile]`` table) sorted by row and taken two at a time, the second joining
    only when its rows follow the first's."""
    import torch

    tiles = sorted(tuple(r) for r in mtiles[:num_mtiles].tolist())
    pairs, i = [], 0
    while i < len(tiles):
        expert, first, end, _ = tiles[i]
        nxt = tiles[i + 1] if i + 1 < len(tiles) else None
        if nxt is not None and nxt[0] == expert and nxt[1] == first + block_m == end:
            pairs.append((expert, first, nxt[2]))
            i += 2
        else:
            pairs.append((expert, first, end))
            i += 1
    return torch.tensor(pairs, dtype=torch.int32, device=mtiles.device)


_PAIRS: dict = {}


def launch_cluster(recv, w1, mtiles, num_mtiles, probs, act, preact, *, block_n=128, block_k=64, stages=4, group_m=8,
                   multicast=True, loader_regs=40, maxnreg=168, num_clusters=None, ctas=2):  # fmt: skip
    """:func:`ws_fc1_cluster_kernel` on ``recv [R_cap, H]`` and ``w1 [E, 2F, H]`` (bf16); ``group_m`` counts
    128-row tiles (as :func:`gluon_ws_fc1.launch`'s), so a raster group holds ``group_m // 2`` pairs. ``ctas=1``
    runs the same kernel on single CTAs (one M-tile per item, no multicast): the control under the same compiler
    (``gluon_ws_fc1``'s kernel, written for Triton 3.6, does not compile under 3.9)."""
    import torch
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    multicast = multicast and ctas == 2
    key = (mtiles.data_ptr(), num_mtiles, ctas)
    if key not in _PAIRS:  # ctas=1: each M-tile alone
        _PAIRS[key] = pair_table(mtiles, num_mtiles, 128) if ctas == 2 else mtiles[:num_mtiles, :3].contiguous()
    pairs = _PAIRS[key]
    e, two_f, h = w1.shape
    rows = 128 * ctas
    a_layout = gl.NVMMASharedLayout.get_default_for([rows, block_k], gl.bfloat16, cga_layout=[[1, 0]][: ctas - 1])
    w_layout = gl.NVMMASharedLayout.get_default_for([block_n, block_k], gl.bfloat16, cga_layout=[[0, 0]][: ctas - 1])
    a_desc = TensorDescriptor.from_tensor(recv, [rows, block_k], a_layout)
    w_desc = TensorDescriptor.from_tensor(w1.view(e * two_f, h), [block_n, block_k], w_layout)
    num_sms = torch.cuda.get_device_properties(recv.device).multi_processor_count
    ws_fc1_cluster_kernel[(num_clusters or num_sms // ctas,)](
        a_desc, w_desc, pairs, pairs.shape[0], probs, act, preact, two_f // 2, h,
        STAGES=stages, GROUP_M=max(1, group_m // ctas), MULTICAST=multicast, LOADER_REGS=loader_regs,
        num_warps=8, num_ctas=ctas, maxnreg=maxnreg,
    )  # fmt: skip


def compile_only() -> None:
    """Compile the kernel for sm_90 without a GPU and print what the PTX shows of the cluster mechanics."""
    for ctas, multicast in ((2, True), (2, False), (1, False)):
        a_layout = gl.NVMMASharedLayout.get_default_for([128 * ctas, 64], gl.bfloat16, cga_layout=[[1, 0]][: ctas - 1])
        w_layout = gl.NVMMASharedLayout.get_default_for([128, 64], gl.bfloat16, cga_layout=[[0, 0]][: ctas - 1])
        _compile_and_report(a_layout, w_layout, ctas, multicast)


def _compile_and_report(a_layout, w_layout, ctas: int, multicast: bool) -> None:
    import re

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    signature = {
        "a_desc": f"tensordesc<bf16[{128 * ctas}, 64],{a_layout!r}>",
        "w_desc": f"tensordesc<bf16[128, 64],{w_layout!r}>",
        "pairs_ptr": "*i32",
        "num_pairs": "i32",
        "probs_ptr": "*fp32",
        "act_ptr": "*bf16",
        "preact_ptr": "*bf16",
        "F": "i32",
        "H": "i32",
    }
    constexprs = {"STAGES": 4, "GROUP_M": 4, "MULTICAST": multicast, "LOADER_REGS": 40}
    full_signature = signature | dict.fromkeys(constexprs, "constexpr")
    source = GluonASTSource(fn=ws_fc1_cluster_kernel, signature=full_signature, constexprs=constexprs)
    compiled = triton.compile(
        source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8, "num_ctas": ctas, "maxnreg": 168}
    )
    ptx = compiled.asm["ptx"]
    counts = {
        name: len(re.findall(pattern, ptx))
        for name, pattern in {
            "multicast copies": r"multicast::cluster",
            "cluster arrives": r"mbarrier\.arrive\.shared::cluster",
            "wgmma": r"wgmma\.mma_async",
        }.items()
    }
    print(f"ctas={ctas} multicast={multicast}: shared {compiled.metadata.shared} B, " + ", ".join(
        f"{v} {k}" for k, v in counts.items()))  # fmt: skip


def smoke(variant: dict, sizes=(512, 384, 100), h: int = 1024, f: int = 512, launches: int = 1) -> None:
    """``launches`` launches of one variant (JSON :func:`launch_cluster` keywords) on a small problem — experts of
    ``sizes`` rows (by default a full pair, a half-empty pair, a partial tile), ``H = h``, ``F = f`` — checked against
    PyTorch, with progress printed as it goes: run under ``timeout``, a hang shows where it stopped."""
    import time

    import torch

    def say(msg):
        print(f"[{time.strftime('%X')}] {variant}: {msg}", flush=True)

    dev = torch.device("cuda", 0)
    gen = torch.Generator(device=dev).manual_seed(0)
    rows = sum(sizes)
    recv = torch.randn(rows + 256, h, device=dev, generator=gen).bfloat16()
    w1 = (torch.randn(len(sizes), 2 * f, h, device=dev, generator=gen) / h**0.5).bfloat16()
    probs = torch.rand(rows + 256, device=dev, generator=gen)
    tiles, start = [], 0
    for e, n in enumerate(sizes):
        for t in range(-(-n // 128)):
            tiles.append((e, start + 128 * t, min(start + 128 * (t + 1), start + n), t))
        start += n
    mtiles = torch.tensor(tiles, dtype=torch.int32, device=dev)
    act = torch.full((rows, f), float("nan"), dtype=torch.bfloat16, device=dev)
    preact = torch.full((rows, 2 * f), float("nan"), dtype=torch.bfloat16, device=dev)
    offs = torch.cumsum(torch.tensor(sizes, device=dev), 0).to(torch.int32)
    ref_pre = torch._grouped_mm(recv[:rows], w1.transpose(1, 2), offs=offs)
    gate, lin = ref_pre.float().chunk(2, dim=-1)
    ref_act = (gate * torch.sigmoid(gate) * lin * probs[:rows, None]).bfloat16()
    torch.cuda.synchronize()
    pairs = pair_table(mtiles, len(tiles), 128).shape[0]
    say(f"inputs ready ({len(tiles)} tiles, {pairs} pairs, {-(-f // 128)} N-tiles); launching")
    for i in range(launches):
        launch_cluster(recv, w1, mtiles, len(tiles), probs, act, preact, **variant)
        say(f"launch {i} issued; synchronizing")
        torch.cuda.synchronize()
    err = [((a.float() - b.float()).norm() / b.float().norm()).item() for a, b in ((preact, ref_pre), (act, ref_act))]
    say(f"done: rel err preact {err[0]:.2e} act {err[1]:.2e}, NaN left {int(act.isnan().sum())}")


def plot(report: dict, path: str) -> str:
    """Bars per case: each kernel's ms (means of the rounds), torch._grouped_mm's, and the labels' variants."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(report["cases"])
    labels = list(report["cases"][cases[0]]["ms"])
    fig, ax = plt.subplots(figsize=(11, 6))
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        ms = [sum(v) / len(v) for v in (report["cases"][c]["ms"][label] for c in cases)]
        name = label
        if label in report["cases"][cases[0]]["variants"]:
            name = f"{label} {report['cases'][cases[0]]['variants'][label]}"
        ax.bar([j - 0.4 + (i + 0.5) * width for j in range(len(cases))], ms, width, label=name)
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels(cases)
    ax.set_ylabel("ms (fc1 GEMM core: SwiGLU·prob epilogue, [gate | linear] saved)")
    ax.set_title(f"fc1 cores, EP=2 simulated, rank 0, {report['device']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"chart written: {path}"


if __name__ == "__main__":
    if "--compile-only" in sys.argv:
        compile_only()
    elif "--replot" in sys.argv:
        import json

        for path in sys.argv[sys.argv.index("--replot") + 1 :]:
            with open(path) as fh:
                print(plot(json.load(fh), os.path.splitext(path)[0] + ".png"))
    elif "--smoke" in sys.argv:
        import json

        variant = json.loads(sys.argv[sys.argv.index("--smoke") + 1])
        problem = json.loads(sys.argv[sys.argv.index("--problem") + 1]) if "--problem" in sys.argv else {}
        try:
            smoke(variant, **problem)
        except Exception as exc:
            print(f"{variant}: {type(exc).__name__}: {str(exc)[:1500]}", flush=True)
            raise SystemExit(1) from exc
    else:
        title = __doc__.split("\n\n")[0]
        gluon_ws_fc1.main(launch_fn=launch_cluster, description=title, json_name="probe_gluon39_ws_fc1_cluster.json")
