"""CUDA-event timing shared by the single-GPU benchmarks (``bench_gemm_core.py``, ``bench_wgrad.py``)."""

from __future__ import annotations

import statistics
import time

import torch


def time_ms(fn, iters: int, warmup: int) -> tuple[float, float]:
    """(median GPU ms, median host ms of the call itself) of ``fn()`` over ``iters`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    gpu, host = [], []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        t0 = time.perf_counter()
        fn()
        host.append((time.perf_counter() - t0) * 1e3)
        end.record()
        end.synchronize()
        gpu.append(start.elapsed_time(end))
    return statistics.median(gpu), statistics.median(host)


def dense_matmul_tflops(device, iters: int = 20, warmup: int = 5, n: int = 8192) -> float:
    """Measured bf16 rate of an ``n x n x n`` matmul: the floors' GEMM rate."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn_like(a)
    ms, _ = time_ms(lambda: a @ b, iters, warmup)
    return 2 * n**3 / ms / 1e9
