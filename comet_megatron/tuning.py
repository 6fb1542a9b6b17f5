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

CACHE_VERSION = 1


@dataclass(frozen=True)
class KernelConfig:
    comm_programs: int = 16
    block_m: int = 128
    fc1_block_n: int = 128
    fc2_block_n: int = 128
    dgrad_block_n: int = 128  # the backward's fc2 data-gradient GEMM (dispatch_dgrad), one accumulator wide
    block_k: int = 64
    group_m: int = 8
    num_warps: int = 8
    num_stages: int = 4
    comm_rows: int = 4
    comm_block_h: int = 512


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


def default_config(key: ShapeKey) -> KernelConfig:
    """Without measurements: give the push programs the share of the grid that dispatch takes of
    layer0's time (rows leaving this rank vs the fc1 FLOPs), clamped to [16, num_sms / 3].

    On 2xH200 (2026-11-23, fwd) Mixtral (dispatch ~3% of layer0) ran best with 16 of 132 programs pushing,
    Qwen1.5-MoE (~26%) with 32; 128-wide fc1 tiles beat 64-wide on both (14.5 vs 17.3 ms, 5.6 vs 6.2 ms);
    with TMA loads, 4 pipeline stages beat 3 on Mixtral, Qwen1.5-MoE and DSv3 (11.7/3.9/12.3 vs 12.6/4.5/14.1 ms).
    """
    slots = key.tokens * key.topk
    remote_bytes = slots * (key.ep - 1) / key.ep * key.hidden * 2
    fc1_flops = 2 * slots * key.hidden * 2 * key.ffn
    comm_time, gemm_time = remote_bytes / _PUSH_BYTES_PER_S, fc1_flops / _GEMM_FLOPS_PER_S
    share = comm_time / max(comm_time + gemm_time, 1e-12)
    comm = int(min(max(round(key.num_sms * share), 16), key.num_sms // 3))
    return KernelConfig(comm_programs=comm)


def choose_config(key: ShapeKey) -> KernelConfig:
    memo = (str(cache_path()), key.as_str())
    if memo not in _chosen:
        cached = _load().get(key.as_str())
        _chosen[memo] = KernelConfig(**cached) if cached else default_config(key)
    return _chosen[memo]


def candidate_configs(key: ShapeKey) -> list[KernelConfig]:
    base = default_config(key)
    fractions = (0.06, 0.12, 0.2)
    configs = []
    for frac in fractions:
        comm = max(4, round(key.num_sms * frac))
        for fc1_bn, stages in ((128, 4), (128, 3), (64, 4)):
            configs.append(dataclasses.replace(base, comm_programs=comm, fc1_block_n=fc1_bn, num_stages=stages))
    return configs


def tune(key: ShapeKey, time_config: Callable[[KernelConfig], float], candidates: Iterable[KernelConfig] | None = None):
    """Time every candidate (``time_config`` returns ms, ``inf`` on failure), cache and return the best.

    Every rank of the EP group must call this with the same candidates (the kernels communicate).
    """
    results = []
    for config in candidates or candidate_configs(key):
        results.append((time_config(config), config))
    best_ms, best = min(results, key=lambda r: r[0])
    cache = _load()
    cache[key.as_str()] = dataclasses.asdict(best)
    path = cache_path()
    _chosen[(str(path), key.as_str())] = best
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError:
        pass  # a read-only cache directory only costs re-tuning
    return best, best_ms, results
