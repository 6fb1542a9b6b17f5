"""Compile-only check (no GPU): Triton >= 3.9's Gluon lowers a 2-CTA cluster with TMA multicast for Hopper.

The step before a multicast fc1 core (``notes/next-steps.md`` §1f). Two CTAs share one weight (B) tile: the A tile
``[256, 64]`` is split over the cluster along M (CGA basis ``[[1, 0]]``, each CTA loads its 128 rows), the B tile
``[128, 64]`` is replicated (``[[0, 0]]``) and loaded once with ``multicast=True`` for both CTAs; the consumers'
release goes to CTA 0's barrier (``mbarrier.arrive(..., from_cta=0)``), which is what a pipelined kernel needs before
CTA 0 refills a stage that CTA 1 still reads. Prints the PTX lines that show it:
``cp.async.bulk.tensor...multicast::cluster`` and ``mbarrier.arrive.shared::cluster``.

Correction (session 20, reading the PTX): ``from_cta=0`` on a per-CTA barrier is CTA 0 arriving on *every* CTA's copy
(threads 0 and 1 of CTA 0, one address each), not each CTA arriving on CTA 0's, so the ``released`` barrier below
would never complete on a GPU (this probe only compiles). The release to CTA 0 that a pipelined kernel needs is a
``mbarrier.allocate_mbarrier(two_ctas=True)`` barrier: both CTAs' arrivals land in CTA 0's copy and only CTA 0 waits
(``gluon39_ws_fc1_cluster.py``).

Session 19 (Triton 3.9.0, here): both compile for sm_90 with ``num_ctas=2``; each CTA expects 32768 bytes (its A half
plus the whole B tile). Triton 3.6 (the GPU image's) has neither ``multicast=`` nor CGA layouts in Gluon; plain
Triton's ``num_ctas=2`` splits a tile over the cluster without multicast.

  python benchmarks/probes/gluon39_multicast_compile.py
"""

from __future__ import annotations

import re

import triton
from triton.backends.compiler import GPUTarget
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon._runtime import GluonASTSource
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma


@gluon.jit
def _cluster_tile(a_desc, b_desc, out_ptr, MULTICAST: gl.constexpr, ACC_LAYOUT: gl.constexpr):
    a_smem = gl.allocate_shared_memory(a_desc.dtype, a_desc.block_shape, a_desc.layout)
    b_smem = gl.allocate_shared_memory(b_desc.dtype, b_desc.block_shape, b_desc.layout)
    ready = mbarrier.allocate_mbarrier()
    mbarrier.init(ready, count=1)
    released = mbarrier.allocate_mbarrier()  # every cross-CTA barrier is initialized before its first use
    mbarrier.init(released, count=2)
    mbarrier.expect(ready, a_desc.nbytes_per_cta + b_desc.nbytes_per_cta)
    tma.async_load(a_desc, [0, 0], ready, a_smem)
    tma.async_load(b_desc, [0, 0], ready, b_smem, multicast=MULTICAST)
    mbarrier.wait(ready, phase=0)
    acc = warpgroup_mma(a_smem, b_smem.permute((1, 0)), gl.zeros([256, 128], gl.float32, ACC_LAYOUT))
    mbarrier.arrive(released, from_cta=0)  # both CTAs release the stage to CTA 0, the multicast's issuer
    mbarrier.wait(released, phase=0)
    rows = gl.arange(0, 256, layout=gl.SliceLayout(1, ACC_LAYOUT))
    cols = gl.arange(0, 128, layout=gl.SliceLayout(0, ACC_LAYOUT))
    gl.store(out_ptr + rows[:, None] * 128 + cols[None, :], acc)


def main() -> None:
    a_layout = gl.NVMMASharedLayout.get_default_for([256, 64], gl.bfloat16, cga_layout=[[1, 0]])
    b_layout = gl.NVMMASharedLayout.get_default_for([128, 64], gl.bfloat16, cga_layout=[[0, 0]])
    acc_layout = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, 128, 16], cga_layout=[[1, 0]]
    )
    signature = {
        "a_desc": f"tensordesc<bf16[256, 64],{a_layout!r}>",
        "b_desc": f"tensordesc<bf16[128, 64],{b_layout!r}>",
        "out_ptr": "*fp32",
        "MULTICAST": "constexpr",
        "ACC_LAYOUT": "constexpr",
    }
    for multicast in (False, True):
        source = GluonASTSource(
            fn=_cluster_tile, signature=signature, constexprs={"MULTICAST": multicast, "ACC_LAYOUT": acc_layout}
        )
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "num_ctas": 2})
        ptx = compiled.asm["ptx"]
        print(f"multicast={multicast}: {len(re.findall('multicast::cluster', ptx))} multicast copies")
        for line in ptx.splitlines():
            if re.search(r"cp\.async\.bulk\.tensor|mbarrier\.(arrive|init)|reqnctapercluster", line):
                print("   ", line.strip())


if __name__ == "__main__":
    main()
