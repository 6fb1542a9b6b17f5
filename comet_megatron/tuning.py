"""Adaptive workload assignment: how a persistent grid is split and tiled, per shape.

A :class:`KernelConfig` fixes the communication/compute split of layer0 (``comm_programs`` of the grid
push rows, the rest run GEMM tiles), the tile shapes and the pipeline depth. :func:`choose_config`
returns the cached choice for a (shape, EP size, GPU) key, or a sound default; :func:`tune` times
candidates with a caller-supplied function and caches the best on disk (versioned JSON). The SM count
and GPU name are read from the device; nothing assumes a GPU model.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

# Cached entries hold whole configurations, so a changed default would stay frozen in entries tuned before it:
# bump the version whenever a KernelConfig default or default_config changes.
# 2: epilogue_split, dgrad_fused_activation; 3: push steps of 16 rows x 1024 columns; 4: fc2_flatten;
# 5: dgrad_comm_programs, local rows counted in the push programs' share; 6: own_rows_first off for few M-tiles;
# 7: aligned_peer_stores; 8: fc2 ⊕ combine 256 wide and flattened, the fc2 data-gradient 256 wide, for every shape.
CACHE_VERSION = 8


GEMM_TILE_SIDES = (16, 256)  # a GEMM tile side: tensor-core tile minimum, TMA box maximum (powers of two between)


def is_gemm_tile_side(value) -> bool:
    """An integer power of two within :data:`GEMM_TILE_SIDES`: what Triton's MMA and a TMA box accept."""
    return type(value) is int and GEMM_TILE_SIDES[0] <= value <= GEMM_TILE_SIDES[1] and not value & (value - 1)


@dataclass(frozen=True)
class KernelConfig:
    comm_programs: int = 16  # programs that start on layer0's push queue (dispatch_fc1)
    dgrad_comm_programs: int = 16  # the same for the backward's output-gradient dispatch (dispatch_dgrad)
    block_m: int = 128
    fc1_block_n: int = 128
    # fc2 ⊕ combine (forward fc2, K = ffn; backward fc1 data-gradient, K = 2 ffn): 256-wide tiles with the tile loop
    # flattened beat 128-wide ones on every case, long K or short (session 24, bench_gemm_core, one H100, two ranks
    # simulated: Phi-3.5's fc1 data-gradient 3.29-3.54 -> 2.37-2.55 ms, Qwen2-57B's 4.59-5.19 -> 3.69-3.73, DSv3-like's
    # 4.84-5.08 -> 3.88-3.96; Mixtral's 256-wide tiles even with or without flattening). The kernel in the EP=1 layer
    # per fwd+bwd on an H200: -10..-14% on every case but Mixtral (-1%) (benchmarks/results/s24/fc2_tiles/)
    fc2_block_n: int = 256
    # the backward's fc2 data-gradient GEMM (dispatch_dgrad), one accumulator wide: 256 on every shape since session 24
    # (bench_gemm_core, H200, two ranks simulated: Qwen1.5-MoE 0.56-0.58 vs 0.61-0.72 ms with 128, Qwen3-30B-A3B
    # 0.36 vs 0.40-0.51; session 4 had found 128 faster where ffn < 2048, before TMA loads and split epilogues)
    dgrad_block_n: int = 256
    block_k: int = 64
    group_m: int = 8
    num_warps: int = 8
    num_stages: int = 4
    # rows x columns a push program moves per step: 16 x 1024 keeps 32 KB in flight per program (4 x 512 kept 4 KB
    # and left the push latency-bound: fc1 with its pushes 1.26 -> 0.87 ms on Qwen1.5-MoE, 5.06 -> 4.32 on Qwen2-57B)
    comm_rows: int = 16
    comm_block_h: int = 1024
    # single-accumulator GEMMs (fc2 ⊕ combine, the fc2 data-gradient) run their epilogue on 1 or 2 column
    # slices of the tile: 2 cuts register spills (256-wide fc2 ⊕ combine on sm_90: 3.3 KB -> 0.7 KB per thread)
    epilogue_split: int = 2
    # the fc2 data-gradient GEMM applies the activation backward in its epilogue (True), or stores dA and an
    # elementwise kernel finishes (False): the fused epilogue is heavy where K = hidden is short
    dgrad_fused_activation: bool = False
    # persistent programs per SM: 2 lets one program's epilogue run while the other's main loop keeps the tensor
    # cores busy (what cuBLAS's ping-pong kernels do with two consumer warpgroups), if both fit on the SM at once
    programs_per_sm: int = 1
    # fc2 ⊕ combine's persistent tile loop fused with its K loop, pipelined across tiles (kernels/fc2_combine.py)
    fc2_flatten: bool = True
    # at EP > 1 the M-tiles made only of this rank's own rows run first (they need no remote rows: the GEMM starts
    # while the rest arrive), the others after; False: expert-major, so an expert whose tiles fall in both groups
    # has its weight tiles read once instead of twice — an extra read of every local expert's weights per GEMM,
    # which weighs most where an expert has few M-tiles. default_config turns it off there (its docstring has the
    # measurements); the tuner times the other order (candidate_configs). The push units follow the same order
    # (fused_plan.build_plan): expert-major across destinations without it, so that a destination's first experts
    # receive their remote rows first.
    own_rows_first: bool = True
    # the pushes into peers' buffers (both dispatch kernels' row copies, fc2 ⊕ combine's epilogue) use 16-byte stores:
    # the peer tables' base addresses are declared aligned (kernels/sync.py: peer_pointer), else every bf16 store
    # moves 2 bytes. EP=1 layer, H100 (perf-log session 23): fc2 ⊕ combine -12% on Qwen3-30B-A3B, -7% Qwen1.5, -5%
    # Mixtral, -1% Phi-3.5. Phi-3.5's fc1 data-gradient lost 11-14% with them in the two-ranks-on-one-GPU benchmark
    # while fc2 ⊕ combine had 128-wide tiles; with 256-wide ones it gains 8-22% (session 24, H200)
    aligned_peer_stores: bool = True

    def persistent_grid(self, num_sms: int) -> int:
        """Programs of the persistent kernels on a GPU with ``num_sms`` SMs."""
        return num_sms * self.programs_per_sm

    def __post_init__(self) -> None:
        bad_types = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
            if type(getattr(self, f.name)) is not (bool if f.type in (bool, "bool") else int)
        ]
        if bad_types:
            fields = ", ".join(bad_types)
            raise ValueError(
                f"KernelConfig: {fields}: wrong type (integers; dgrad_fused_activation, fc2_flatten, "
                "own_rows_first, aligned_peer_stores: bool)"
            )
        gemm_blocks = ("block_m", "fc1_block_n", "fc2_block_n", "dgrad_block_n", "block_k")
        blocks = {name: getattr(self, name) for name in (*gemm_blocks, "comm_rows", "comm_block_h")}
        bad = [f"{n}={v}" for n, v in blocks.items() if v < 1 or v & (v - 1)]
        if bad:
            raise ValueError(f"KernelConfig: {', '.join(bad)} must be powers of two (Triton block shapes)")
        if self.epilogue_split not in (1, 2):
            raise ValueError(f"KernelConfig: epilogue_split={self.epilogue_split} must be 1 or 2")
        small = [f"{n}={blocks[n]}" for n in gemm_blocks if blocks[n] < GEMM_TILE_SIDES[0]]
        if small:
            raise ValueError(
                f"KernelConfig: {', '.join(small)} must be at least {GEMM_TILE_SIDES[0]} (tensor-core tile minimum)"
            )
        wide = [f"{n}={blocks[n]}" for n in gemm_blocks if blocks[n] > GEMM_TILE_SIDES[1]]
        if wide:
            raise ValueError(f"KernelConfig: {', '.join(wide)} must be at most {GEMM_TILE_SIDES[1]} (a TMA box side)")
        if self.programs_per_sm not in (1, 2):
            raise ValueError(f"KernelConfig: programs_per_sm={self.programs_per_sm} must be 1 or 2")
        if self.programs_per_sm == 2 and self.num_warps != 4:
            # two 8-warp programs get at most 128 registers per thread: the accumulators alone need that many
            raise ValueError(f"KernelConfig: programs_per_sm=2 needs num_warps=4 (got {self.num_warps})")
        if (
            min(self.comm_programs, self.dgrad_comm_programs) < 1
            or self.num_warps not in (4, 8, 16)
            or self.num_stages < 1
            or self.group_m < 1
        ):
            raise ValueError(
                f"KernelConfig: comm_programs={self.comm_programs}, dgrad_comm_programs={self.dgrad_comm_programs} "
                f"and group_m={self.group_m} must be >= 1, "
                f"num_warps={self.num_warps} 4, 8 or 16 (whole warpgroups), num_stages={self.num_stages} >= 1"
            )


@dataclass(frozen=True)
class ShapeKey:
    tokens: int
    hidden: int
    ffn: int
    num_experts: int
    topk: int
    ep: int
    device: str
    num_sms: int

    def as_str(self) -> str:
        return (
            f"v{CACHE_VERSION}|{self.device}|sm{self.num_sms}|ep{self.ep}|t{self.tokens}|h{self.hidden}"
            f"|f{self.ffn}|e{self.num_experts}|k{self.topk}"
        )


def cache_path() -> Path:
    root = os.environ.get("COMET_TUNING_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "comet_megatron", "tuning.json"
    )
    return Path(root)


def _load() -> dict:
    try:
        return json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}


# choose_config runs on every layer call, between the counts read and the first launch (the GPU waits): read
# the cache file once per (path, key) and process, not per call; tune() refreshes the entry it writes.
_chosen: dict[tuple[str, str], KernelConfig] = {}


# Rates used only to split the grid before anything is measured (H200: ~700 TFLOP/s grouped bf16 GEMM,
# ~350 GB/s NVLink push per direction); the split follows their ratio, so their exact values matter little.
_GEMM_FLOPS_PER_S = 700e12
_PUSH_BYTES_PER_S = 350e9
# Rows a push program copies into its own rank's expert-major buffer: row gathers are latency-bound per program
# (session 16, one H200: 16 programs moved Qwen3-30B-A3B's 134 MB of local rows in ~0.79 ms, ~10.6 GB/s each).
_GATHER_BYTES_PER_S_PER_PROGRAM = 10.6e9


def _push_programs(key: ShapeKey, dispatch_flops: float) -> int:
    """Programs for a dispatch kernel's push queue: the share of the grid that moving every received row (local rows
    copied at the per-program gather rate across the grid, remote rows at the link's rate) takes of that plus the
    kernel's GEMM, clamped to [16, num_sms / 3]."""
    row_bytes = key.tokens * key.topk * key.hidden * 2
    local_bytes, remote_bytes = row_bytes / key.ep, row_bytes * (key.ep - 1) / key.ep
    comm_time = local_bytes / (_GATHER_BYTES_PER_S_PER_PROGRAM * key.num_sms) + remote_bytes / _PUSH_BYTES_PER_S
    gemm_time = dispatch_flops / _GEMM_FLOPS_PER_S
    share = comm_time / max(comm_time + gemm_time, 1e-12)
    return int(min(max(round(key.num_sms * share), 16), key.num_sms // 3))


def default_config(key: ShapeKey) -> KernelConfig:
    """Without measurements: give the push programs the share of the grid that dispatch takes of
    layer0's time (the rows this rank's experts receive vs the fc1 FLOPs), clamped to [16, num_sms / 3]; the same
    for the backward's output-gradient dispatch against the fc2 data-gradient's FLOPs (half of a gated fc1's, so the
    rows weigh twice as much there).

    Session 16 (one H200, EP=1, ``bench_layer --profile-kernels``): counting only the rows that leave the rank gave
    16 programs at EP=1, and the local rows' gather then bounded the kernels on the fine-grained shapes: 48 programs
    took Qwen3-30B-A3B's dispatch ⊕ fc1 from 0.79 to 0.56 ms and dispatch ⊕ fc2 data-gradient from 0.71 to 0.36,
    Qwen1.5-MoE's data-gradient kernel from 0.70 to 0.49 (its fc1 unchanged).

    On 2xH200 (2026-11-23, fwd) Mixtral (dispatch ~3% of layer0) ran best with 16 of 132 programs pushing,
    Qwen1.5-MoE (~26%) with 32; 128-wide fc1 tiles beat 64-wide on both (14.5 vs 17.3 ms, 5.6 vs 6.2 ms);
    with TMA loads, 4 pipeline stages beat 3 on Mixtral, Qwen1.5-MoE and DSv3 (11.7/3.9/12.3 vs 12.6/4.5/14.1 ms).

    GEMM cores alone on one H200 (``benchmarks/bench_gemm_core.py``, 2026-11-23; the class defaults come from
    it): the fc2 data-gradient with a plain epilogue and a separate activation backward, 256 wide, beat the fused
    128-wide epilogue on every case (Mixtral 1.82 vs 2.35 ms, Qwen2-57B 2.29 vs 3.21) but Qwen1.5-MoE (0.60 vs 0.72);
    split epilogues helped fc2 ⊕ combine everywhere. No tile shape is chosen by shape any more (session 24, the class
    defaults' comments have the numbers): fc2 ⊕ combine 256 wide with its tile loop flattened into the K loop wins on
    every case, and the fc2 data-gradient 256 wide on Qwen1.5 / Qwen3 too. Before, fc2 ⊕ combine had 128-wide flattened
    tiles below ffn 8192 and 256-wide unflattened ones above (session 9 measured 256 wide without flattening, session
    11 flattening with 128 wide), and the data-gradient 128-wide tiles below ffn 2048.

    M-tile order (``own_rows_first``; session 22, one H200, ``benchmarks/results/s22/``): own rows first costs every
    local expert one extra read of its weights, so its price falls as 1 / (M-tiles per expert); expert-major costs
    waiting for the peers' first rows. Emulated EP=2 (``bench_arrival.py``, call 6: the peer's pushes paced to its
    local gathers plus its remote rows at 314 GB/s, starting with this rank), own rows first vs expert-major, ms —
    layer0: DSv3-like (2 M-tiles per expert) 4.80 vs 4.49, Qwen3-30B-A3B (4) 0.671 vs 0.634, Qwen1.5-MoE (8.5) 0.910
    vs 0.888, Qwen2-57B (16) 4.48 vs 4.41, Mixtral (32) 5.96 vs 5.95; the backward's dispatch ⊕ fc2 data-gradient:
    2.91 vs 2.61, 0.538 vs 0.502, 0.709 vs 0.680, 2.77 vs 2.74, 3.51 vs 3.51. With the peer 100 µs late Qwen1.5's
    layer0 loses 2% with expert-major, Qwen3's gain shrinks to 1%, DSv3-like's stays 6%. The four GEMM cores with
    nothing waiting, two runs each: DSv3-like 14.08 vs 13.17, Qwen3 2.10 vs 2.01 (within its noise). Hence
    expert-major up to 4 M-tiles per expert. Measured only with the peer emulated, and only at EP=2.
    """
    slots = key.tokens * key.topk
    fc2_dgrad_flops = 2 * slots * key.hidden * key.ffn
    return KernelConfig(
        comm_programs=_push_programs(key, 2 * fc2_dgrad_flops),  # fc1: gate and linear halves
        dgrad_comm_programs=_push_programs(key, fc2_dgrad_flops),
        own_rows_first=key.ep == 1 or expected_mtiles_per_expert(key) > EXPERT_MAJOR_MAX_MTILES,  # EP=1: one order
    )


# KernelConfig.own_rows_first: expert-major M-tiles where a local expert's rows fill at most this many (default_config)
EXPERT_MAJOR_MAX_MTILES = 4


def expected_mtiles_per_expert(key: ShapeKey) -> float:
    """M-tiles (``KernelConfig.block_m`` rows) of one local expert under uniform routing: every rank of the group
    sends it ``tokens * topk / experts`` rows."""
    return key.ep * key.tokens * key.topk / key.num_experts / KernelConfig.block_m


def choose_config(key: ShapeKey) -> KernelConfig:
    memo = (str(cache_path()), key.as_str())
    if memo not in _chosen:
        cached = _load().get(key.as_str())
        _chosen[memo] = KernelConfig(**cached) if cached else default_config(key)
    return _chosen[memo]


# The tuner's push-program counts: the default's (or the cached choice's) scaled, since the right count follows the
# shape (session 16: 16 programs at EP=1 bounded Qwen3-30B-A3B's kernels, 44 did not; Mixtral's stays at 16).
PUSH_SCALES = (0.5, 1.0, 1.5)
# fc1 tile width x pipeline depth: 128 x 4 is the default; 3 stages leave more shared memory to the epilogue, 64-wide
# tiles more tiles per expert on short ones
FC1_TILE_CHOICES = ((128, 4), (128, 3), (64, 4))


def _scaled_push(programs: int, scale: float, num_sms: int) -> int:
    # at least 4 programs, at most half of the grid; on a GPU of fewer than 8 SMs the half wins (never below 1)
    return max(1, int(min(max(round(programs * scale), 4), num_sms // 2)))


def candidate_configs(base: KernelConfig, num_sms: int) -> list[KernelConfig]:
    """What the tuner times for a shape whose current choice is ``base``: ``base`` itself first, then both
    dispatch kernels' push counts scaled together by :data:`PUSH_SCALES` x :data:`FC1_TILE_CHOICES` (clamped to
    [4, num_sms / 2], at least 1), then ``base`` with the other M-tile order (:attr:`KernelConfig.own_rows_first`;
    the same tables at EP=1), last ``base`` with the other peer-store width (:attr:`KernelConfig.aligned_peer_stores`).
    The list's length does not depend on ``base`` (a candidate may repeat ``base``: two
    timings of one configuration show the measurement's noise)."""
    candidates = [base]
    for scale in PUSH_SCALES:
        comm = _scaled_push(base.comm_programs, scale, num_sms)
        dgrad_comm = _scaled_push(base.dgrad_comm_programs, scale, num_sms)
        for fc1_bn, stages in FC1_TILE_CHOICES:
            candidates.append(
                dataclasses.replace(
                    base, comm_programs=comm, dgrad_comm_programs=dgrad_comm, fc1_block_n=fc1_bn, num_stages=stages
                )
            )
    candidates.append(dataclasses.replace(base, own_rows_first=not base.own_rows_first))
    candidates.append(dataclasses.replace(base, aligned_peer_stores=not base.aligned_peer_stores))
    return candidates


CANDIDATE_COUNT = 3 + len(PUSH_SCALES) * len(FC1_TILE_CHOICES)


def tune(key: ShapeKey, time_config: Callable[[KernelConfig], float], candidates: Iterable[KernelConfig] | None = None):
    """Time every candidate (``time_config`` returns ms, ``inf`` on failure), cache and return the best. Without
    ``candidates``: :func:`candidate_configs` of the current choice (:func:`choose_config`: the cached one, else the
    default), as ``bench_layer.py --tune`` times them.

    Every rank of the EP group must call this with the same candidates (the kernels communicate).
    """
    results = []
    for config in candidates or candidate_configs(choose_config(key), key.num_sms):
        results.append((time_config(config), config))
    best_ms, best = min(results, key=lambda r: r[0])
    store_config(key, best)
    return best, best_ms, results


def store_config(key: ShapeKey, config: KernelConfig) -> None:
    """Make ``config`` the cached choice for ``key`` (in this process and in the cache file)."""
    cache = _load()
    cache[key.as_str()] = dataclasses.asdict(config)
    path = cache_path()
    _chosen[(str(path), key.as_str())] = config
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError:
        pass  # a read-only cache directory only costs re-tuning
