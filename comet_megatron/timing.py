"""Sections timed in situ without synchronising the device: CUDA events plus host clocks, read once completed.

``COMET_LAYER_TIMING=N`` turns it on (0 or unset: off, and nothing here costs anything). Then every rank prints, for
each timer (a module kind such as ``moe``, or ``fused`` for the fused backend's phases), every ``N`` completed
sections of its most frequent label, the mean GPU and host milliseconds of each label:

* **gpu**: between CUDA events recorded on the current stream where the section starts and ends, so it includes
  any time the GPU sat idle waiting for the host inside it;
* **host**: ``time.perf_counter`` between the same points (host syncs inside the section included);
* **cpu**: this thread's CPU time (``time.thread_time``) between them: far below **host** means the thread was
  waiting (a sync) or not scheduled (other threads or processes on its core), equal means the code itself is slow;

and the mean of any values noted (e.g. rows received per layer call), plus the caching allocator's
``num_alloc_retries`` and reserved memory. :mod:`comet_megatron.megatron.layer_timing` times Megatron modules with
this and summarizes training logs.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import time
from collections import defaultdict, deque

import torch

ENV = "COMET_LAYER_TIMING"
TAG = "[comet-layer-timing]"


def report_interval() -> int:
    """Sections per report from ``COMET_LAYER_TIMING`` (0: off). A value that is not an integer >= 0 is an error."""
    raw = os.environ.get(ENV, "0").strip() or "0"
    try:
        every = int(raw)
    except ValueError:
        every = -1
    if every < 0:
        raise ValueError(f"{ENV}={raw!r}: expected the number of calls per report (an integer >= 0; 0 turns it off)")
    return every


def _cuda_active() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


class Mark:
    """One point in time: host clock and, on CUDA, an event recorded on the current stream."""

    __slots__ = ("host", "cpu", "event")

    def __init__(self, cuda: bool | None = None):
        self.host = time.perf_counter()
        self.cpu = time.thread_time()
        self.event = None
        if _cuda_active() if cuda is None else cuda:
            self.event = torch.cuda.Event(enable_timing=True)
            self.event.record()


class SectionTimer:
    """Mean GPU/host time of labelled sections, accumulated without device syncs and printed every ``report_every``.

    Args:
        kind: printed in the report (``"moe"``, ``"fused"``).
        report_every: completed sections of the most frequent label per report.
        rank: printed in the report.
        printer: where report lines go (``print`` by default; tests capture them).
    """

    def __init__(self, kind: str, report_every: int, rank: int = 0, printer=print):
        if report_every <= 0:
            raise ValueError(f"report_every must be > 0, got {report_every}")
        self.kind, self.report_every, self.rank, self.printer = kind, report_every, rank, printer
        self._pending: deque = deque()  # (label, start, end) in completion order of the host
        # label -> [gpu ms, host ms, n, largest host ms, cpu ms]: a mean with a far larger maximum means rare stalls
        self._sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0, 0.0, 0.0])
        self._values: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])  # label -> [sum, n]
        self.reports: list[dict] = []

    def add(self, label: str, start: Mark, end: Mark) -> None:
        self._pending.append((label, start, end))
        self.drain()

    def note(self, label: str, value: float) -> None:
        """A number to average over the report's window (e.g. rows received)."""
        acc = self._values[label]
        acc[0] += float(value)
        acc[1] += 1

    @contextlib.contextmanager
    def section(self, label: str):
        start = Mark()
        try:
            yield
        finally:
            self.add(label, start, Mark())

    def drain(self) -> None:
        """Account every section whose end event has completed (in order), and report when a window is full."""
        while self._pending:
            label, start, end = self._pending[0]
            if end.event is not None and not end.event.query():
                break
            self._pending.popleft()
            sums = self._sums[label]
            host_ms = (end.host - start.host) * 1e3
            sums[0] += start.event.elapsed_time(end.event) if end.event is not None else float("nan")
            sums[1] += host_ms
            sums[2] += 1
            sums[3] = max(sums[3], host_ms)
            sums[4] += (end.cpu - start.cpu) * 1e3
        if self._sums and max(s[2] for s in self._sums.values()) >= self.report_every:
            self.report()

    def flush(self, wait: bool = True) -> None:
        """Report what has accumulated (end of a run, tests): with ``wait``, after every recorded event completed;
        without, the sections completed so far (at exit: a kernel still spinning on a dead peer must not hang it)."""
        if wait and _cuda_active():
            torch.cuda.synchronize()
        self.drain()
        if self._sums:
            self.report()

    def report(self) -> None:
        report: dict = {"kind": self.kind, "rank": self.rank, "sections": {}, "values": {}}
        parts = []
        for label, (gpu, host, n, host_max, cpu) in self._sums.items():
            report["sections"][label] = {
                "calls": n,
                "gpu_ms": gpu / n,
                "host_ms": host / n,
                "host_max_ms": host_max,
                "cpu_ms": cpu / n,
            }
            parts.append(
                f"{label} gpu {gpu / n:7.3f} host {host / n:7.3f} cpu {cpu / n:7.3f} ms "
                f"({n} calls, host max {host_max:.3f})"
            )
        for label, (total, n) in self._values.items():
            report["values"][label] = total / n
            parts.append(f"{label} {total / n:.1f}")
        if _cuda_active():
            stats = torch.cuda.memory_stats()
            report["alloc_retries"] = stats.get("num_alloc_retries", 0)
            report["reserved_gib"] = stats.get("reserved_bytes.all.current", 0) / 2**30
            parts.append(f"alloc retries {report['alloc_retries']} reserved {report['reserved_gib']:.2f} GiB")
        self.reports.append(report)
        self.printer(f"{TAG} rank {self.rank} {self.kind}: " + " | ".join(parts))
        self._sums.clear()
        self._values.clear()


_PROCESS_TIMERS: dict[str, SectionTimer | None] = {}


def process_rank() -> int:
    """The global rank printed in reports (0 without an initialized process group)."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def process_timer(kind: str) -> SectionTimer | None:
    """This process's timer for ``kind`` when ``COMET_LAYER_TIMING`` is on, else ``None`` (checked once per kind)."""
    if kind not in _PROCESS_TIMERS:
        every = report_interval()
        _PROCESS_TIMERS[kind] = flush_at_exit(SectionTimer(kind, every, process_rank())) if every else None
    return _PROCESS_TIMERS[kind]


_FLUSHED_AT_EXIT: list[SectionTimer] = []


def flush_at_exit(timer: SectionTimer) -> SectionTimer:
    """Have ``timer`` report what it accumulated since its last report when the process exits (a run's last,
    partial window would be lost otherwise); returns it. The exit hook is registered with the first timer."""
    if not _FLUSHED_AT_EXIT:
        atexit.register(_flush_timers_at_exit)
    _FLUSHED_AT_EXIT.append(timer)
    return timer


def _flush_timers_at_exit() -> None:
    for timer in _FLUSHED_AT_EXIT:
        try:
            timer.flush(wait=False)
        except Exception as exc:  # noqa: BLE001 - an exit hook must not turn a finished run into a failed one
            timer.printer(f"{TAG} rank {timer.rank} {timer.kind}: final report skipped ({exc})")


def time_garbage_collections(timer: SectionTimer) -> None:
    """Record every Python garbage collection as a host-only section ``gc.gen<N>`` of ``timer``: a collection
    that lands between a host sync and the next kernel launch stalls the GPU for its whole duration."""
    import gc

    started: dict = {}

    def callback(phase: str, info: dict) -> None:
        if phase == "start":
            started["mark"] = Mark(cuda=False)
        elif "mark" in started:
            timer.add(f"gc.gen{info.get('generation', '?')}", started.pop("mark"), Mark(cuda=False))

    gc.callbacks.append(callback)
    timer.gc_callback = callback  # gc.callbacks.remove(timer.gc_callback) stops it


def stop_timing_garbage_collections(timer: SectionTimer) -> None:
    import gc

    callback = getattr(timer, "gc_callback", None)
    if callback in gc.callbacks:
        gc.callbacks.remove(callback)


def timed(timer: SectionTimer | None, label: str):
    """``with timed(timer, "fwd.fc2"):`` — a section when ``timer`` exists, nothing otherwise."""
    return timer.section(label) if timer is not None else contextlib.nullcontext()
