"""comet_megatron.timing: sections accumulate, report every N, and cost nothing when COMET_LAYER_TIMING is off."""

import contextlib
import math

import pytest

from comet_megatron import timing


def test_sections_are_reported_every_n_of_the_most_frequent_label():
    lines: list[str] = []
    timer = timing.SectionTimer("fused", report_every=3, rank=1, printer=lines.append)
    for call in range(5):
        timer.note("rows", 100 * call)
        with timer.section("fwd.plan"):
            pass
        if call % 2 == 0:
            with timer.section("bwd.reduce"):
                pass
    assert len(timer.reports) == 1  # after the third fwd.plan
    first = timer.reports[0]
    assert first["sections"]["fwd.plan"]["calls"] == 3 and first["sections"]["bwd.reduce"]["calls"] == 1
    assert first["values"]["rows"] == 100.0  # mean of 0, 100, 200
    assert math.isnan(first["sections"]["fwd.plan"]["gpu_ms"])  # no CUDA here
    assert first["sections"]["fwd.plan"]["host_ms"] >= 0
    timer.flush()
    assert timer.reports[1]["sections"]["fwd.plan"]["calls"] == 2
    assert timer.reports[1]["sections"]["bwd.reduce"]["calls"] == 2
    assert lines[0].startswith("[comet-layer-timing] rank 1 fused: fwd.plan gpu")


def test_process_timer_is_off_without_the_variable(monkeypatch):
    monkeypatch.delenv(timing.ENV, raising=False)
    monkeypatch.setattr(timing, "_PROCESS_TIMERS", {})
    assert timing.process_timer("fused") is None
    assert isinstance(timing.timed(None, "x"), contextlib.nullcontext)
    monkeypatch.setenv(timing.ENV, "8")
    assert timing.process_timer("fused") is None  # decided once per process and kind
    assert timing.process_timer("other").report_every == 8


def test_bad_interval_names_the_variable(monkeypatch):
    monkeypatch.setenv(timing.ENV, "-3")
    with pytest.raises(ValueError, match="COMET_LAYER_TIMING"):
        timing.report_interval()
    with pytest.raises(ValueError, match="report_every"):
        timing.SectionTimer("x", 0)


def test_garbage_collections_are_timed_and_the_callback_removed():
    import gc

    timer = timing.SectionTimer("python", report_every=1000)
    timing.time_garbage_collections(timer)
    try:
        gc.collect()
        gc.collect(0)
    finally:
        timing.stop_timing_garbage_collections(timer)
    assert timer.gc_callback not in gc.callbacks
    timer.flush()
    sections = timer.reports[0]["sections"]
    assert sections["gc.gen2"]["calls"] == 1 and sections["gc.gen0"]["calls"] == 1
    assert sections["gc.gen2"]["host_max_ms"] >= sections["gc.gen2"]["host_ms"] > 0


def test_thread_cpu_time_separates_computing_from_waiting():
    import time

    timer = timing.SectionTimer("python", report_every=1000)
    with timer.section("sleep"):
        time.sleep(0.05)
    with timer.section("spin"):
        end = time.perf_counter() + 0.05
        while time.perf_counter() < end:
            pass
    timer.flush()
    sections = timer.reports[0]["sections"]
    assert sections["sleep"]["host_ms"] >= 45 and sections["sleep"]["cpu_ms"] < 10
    # a busy thread gets most of its wall time as CPU time (a loaded CI machine may take some of it away)
    assert sections["spin"]["cpu_ms"] > 0.5 * sections["spin"]["host_ms"] > 20


def test_the_last_partial_window_is_reported_at_exit():
    import os
    import subprocess
    import sys

    script = (
        "from comet_megatron import timing\n"
        "t = timing.process_timer('fused')\n"
        "for _ in range(3):\n"
        "    with t.section('fwd.plan'):\n"
        "        pass\n"
    )
    env = dict(os.environ, **{timing.ENV: "100"})
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    assert "[comet-layer-timing] rank 0 fused: fwd.plan gpu" in out and "(3 calls" in out, out
