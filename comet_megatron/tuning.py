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
    fc1_block_n: int = 64
    fc2_block_n: int = 128
    block_k: int = 64
    group_m: int = 8
    num_warps: int = 8
    num_stages: int = 3
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


def default_config(key: ShapeKey) -> KernelConfig:
    """Without measurements: ~12% of the SMs push rows (enough bytes in flight to saturate NVLink with
    remote writes, per the row-traffic probe), at least 8, at most a quarter of the grid."""
    comm = max(8, min(key.num_sms // 4, round(key.num_sms * 0.12)))
    if key.ep == 1:
        comm = max(4, comm // 2)
    return KernelConfig(comm_programs=comm)


def choose_config(key: ShapeKey) -> KernelConfig:
    cached = _load().get(key.as_str())
    if cached:
        return KernelConfig(**cached)
    return default_config(key)


def candidate_configs(key: ShapeKey) -> list[KernelConfig]:
    base = default_config(key)
    fractions = (0.06, 0.12, 0.2)
    configs = []
    for frac in fractions:
        comm = max(4, round(key.num_sms * frac))
        for fc1_bn, stages in ((64, 3), (64, 4), (128, 3)):
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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError:
        pass  # a read-only cache directory only costs re-tuning
    return best, best_ms, results
