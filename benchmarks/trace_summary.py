"""Summarize a PyTorch-profiler Chrome trace of training steps: where the GPU was busy, where it waited.

    python benchmarks/trace_summary.py TRACE.json[.gz] [--top 15] [--gap-us 20] [--json out.json]
    python benchmarks/trace_summary.py A.json.gz B.json.gz --labels megatron comet   (side by side)

Megatron writes such traces with ``--profile --use-pytorch-profiler --profile-step-start S --profile-step-end E
--profile-ranks 0 --tensorboard-dir DIR`` (to ``DIR/../torch_profile/rank-0.json.gz``; ``examples/compare_2gpu.sh``
does this with ``PROFILE=1``). Per trace: the span from the first to the last GPU kernel, the time at least one
kernel ran (busy), the idle gaps longer than ``--gap-us`` (count and total), the host time in synchronizing CUDA
calls (stream/device/event synchronize, synchronous ``cudaMemcpy``: a blocked host cannot queue work ahead) and,
apart, in asynchronous copies (they block too when the host memory is pageable; the trace cannot tell), and the
kernels grouped by name with the largest total time first. Caveat: kernels that wait inside the GPU — Comet's
persistent kernels spinning on flags, NCCL kernels waiting for peers — count as busy, so compare the kernel
table too, not only busy/idle.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections import defaultdict
from pathlib import Path

# host calls that wait for the GPU (runtime and driver API names)
_BLOCKING_CALLS = {
    "cudaStreamSynchronize",
    "cudaDeviceSynchronize",
    "cudaEventSynchronize",
    "cudaMemcpy",
    "cuStreamSynchronize",
    "cuCtxSynchronize",
    "cuEventSynchronize",
}
# copies: they block the host when the host memory is pageable (not pinned), which the trace does not record
_COPY_CALL_PREFIXES = ("cudaMemcpyAsync", "cuMemcpy")


def load_events(path: str | Path) -> list[dict]:
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        trace = json.load(f)
    return trace["traceEvents"] if isinstance(trace, dict) else trace


def _union_length(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


def _gaps(intervals: list[tuple[float, float]], min_gap: float) -> list[float]:
    gaps, end = [], None
    for start, stop in sorted(intervals):
        if end is not None and start - end > min_gap:
            gaps.append(start - end)
        end = stop if end is None else max(end, stop)
    return gaps


def summarize(events: list[dict], top: int = 15, gap_us: float = 20.0) -> dict:
    """Times in ms. Kernels: complete events (``ph == "X"``) of category ``kernel``; host calls: ``cuda_runtime``
    (and ``cuda_driver``) events."""
    kernels = [e for e in events if e.get("ph") == "X" and e.get("cat") == "kernel" and "dur" in e]
    if not kernels:
        raise SystemExit("no GPU kernel events in the trace (was CUDA activity profiled?)")
    intervals = [(float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in kernels]
    span = max(stop for _, stop in intervals) - min(start for start, _ in intervals)
    busy = _union_length(intervals)
    gaps = _gaps(intervals, gap_us)
    by_name: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for e in kernels:
        entry = by_name[e.get("name", "?")]
        entry[0] += float(e["dur"])
        entry[1] += 1
    ranked = sorted(by_name.items(), key=lambda kv: -kv[1][0])
    host = [e for e in events if e.get("ph") == "X" and e.get("cat") in ("cuda_runtime", "cuda_driver")]
    blocked, copies = defaultdict(float), defaultdict(float)
    for e in host:
        name = e.get("name", "")
        if name in _BLOCKING_CALLS:
            blocked[name] += float(e.get("dur", 0.0))
        elif name.startswith(_COPY_CALL_PREFIXES):
            copies[name] += float(e.get("dur", 0.0))
    return {
        "kernels": len(kernels),
        "span_ms": span / 1e3,
        "busy_ms": busy / 1e3,
        "idle_ms": (span - busy) / 1e3,
        "idle_gaps": len(gaps),
        "idle_in_gaps_ms": sum(gaps) / 1e3,
        "host_blocked_ms": {k: round(v / 1e3, 3) for k, v in sorted(blocked.items(), key=lambda kv: -kv[1])},
        "host_copy_calls_ms": {k: round(v / 1e3, 3) for k, v in sorted(copies.items(), key=lambda kv: -kv[1])},
        "top_kernels": [
            {"name": name[:120], "total_ms": round(total / 1e3, 3), "calls": calls}
            for name, (total, calls) in ranked[:top]
        ],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("traces", nargs="+", help="Chrome traces (.json or .json.gz)")
    parser.add_argument("--labels", nargs="+", help="one name per trace (default: file names)")
    parser.add_argument("--top", type=int, default=15, help="kernels listed per trace")
    parser.add_argument("--gap-us", type=float, default=20.0, help="idle gaps shorter than this are not counted")
    parser.add_argument("--json", help="write the summaries here")
    args = parser.parse_args(argv)
    labels = args.labels or [Path(t).name for t in args.traces]
    if len(labels) != len(args.traces):
        parser.error("--labels needs one name per trace")
    summaries = {label: summarize(load_events(t), args.top, args.gap_us) for label, t in zip(labels, args.traces)}
    print(f"{'trace':<20}{'span ms':>10}{'busy ms':>10}{'idle ms':>10}{'gaps':>7}{'host sync ms':>14}{'copy ms':>10}")
    for label, s in summaries.items():
        print(
            f"{label:<20}{s['span_ms']:>10.1f}{s['busy_ms']:>10.1f}{s['idle_ms']:>10.1f}{s['idle_gaps']:>7}"
            f"{sum(s['host_blocked_ms'].values()):>14.1f}{sum(s['host_copy_calls_ms'].values()):>10.1f}"
        )
    for label, s in summaries.items():
        print(f"\n{label}: top kernels (total ms, calls)")
        for k in s["top_kernels"]:
            print(f"  {k['total_ms']:>9.2f} {k['calls']:>6}  {k['name']}")
    if args.json:
        Path(args.json).write_text(json.dumps(summaries, indent=2) + "\n")
    return summaries


if __name__ == "__main__":
    sys.exit(main() and 0)
