"""benchmarks/trace_summary.py: busy/idle time, gaps, host sync time and kernel ranking of a Chrome trace."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "trace_summary", Path(__file__).resolve().parents[1] / "benchmarks" / "trace_summary.py"
)
trace_summary = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(trace_summary)


def _kernel(name, ts, dur, stream=7):
    return {"ph": "X", "cat": "kernel", "name": name, "ts": ts, "dur": dur, "args": {"stream": stream}}


def _trace():
    return {
        "traceEvents": [
            _kernel("gemm_a", 0.0, 100.0),
            _kernel("gemm_a", 50.0, 100.0, stream=9),  # overlaps the first: busy counts it once
            _kernel("elementwise", 160.0, 10.0),  # 10 us gap: below the threshold
            _kernel("gemm_a", 400.0, 100.0),  # 230 us gap
            {"ph": "X", "cat": "cuda_runtime", "name": "cudaStreamSynchronize", "ts": 170.0, "dur": 200.0},
            {"ph": "X", "cat": "cuda_runtime", "name": "cudaMemcpyAsync", "ts": 380.0, "dur": 5.0},
            {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 390.0, "dur": 4.0},
            {"ph": "X", "cat": "cuda_driver", "name": "cuCtxSynchronize", "ts": 395.0, "dur": 3.0},
            {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 0.0, "dur": 999.0},
        ]
    }


def test_busy_idle_gaps_and_host_syncs(tmp_path):
    path = tmp_path / "rank-0.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump(_trace(), f)
    s = trace_summary.summarize(trace_summary.load_events(path), top=5, gap_us=20.0)
    assert s["kernels"] == 4
    assert s["span_ms"] == pytest.approx(0.5)
    assert s["busy_ms"] == pytest.approx((150 + 10 + 100) / 1e3)
    assert s["idle_ms"] == pytest.approx((500 - 260) / 1e3)
    assert s["idle_gaps"] == 1 and s["idle_in_gaps_ms"] == pytest.approx(0.23)
    assert s["host_blocked_ms"] == {"cudaStreamSynchronize": 0.2, "cuCtxSynchronize": 0.003}
    assert s["host_copy_calls_ms"] == {"cudaMemcpyAsync": 0.005}  # not counted as blocking
    assert s["top_kernels"][0] == {"name": "gemm_a", "total_ms": 0.3, "calls": 3}


def test_side_by_side_cli(tmp_path, capsys):
    for name in ("a.json", "b.json"):
        (tmp_path / name).write_text(json.dumps(_trace()))
    out = trace_summary.main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--labels", "megatron", "comet"])
    assert set(out) == {"megatron", "comet"}
    assert "megatron" in capsys.readouterr().out


def test_a_trace_without_kernels_is_an_error(tmp_path):
    (tmp_path / "cpu.json").write_text(json.dumps([{"ph": "X", "cat": "cpu_op", "name": "x", "ts": 0, "dur": 1}]))
    with pytest.raises(SystemExit, match="no GPU kernel events"):
        trace_summary.summarize(trace_summary.load_events(tmp_path / "cpu.json"))
