"""In-situ timing of modules during training: what one MoE layer (or attention) call costs inside a real step.

``COMET_LAYER_TIMING=N`` (read by the pretrain entry point) attaches timers to every ``MoELayer`` (Megatron's and
Comet's) and every attention module of the model, and each rank prints, every ``N`` calls of a module kind, the
mean forward and backward time of one call:

* **gpu**: CUDA events recorded on the current stream where the call starts and ends (backward: when the output's
  gradient arrives and when the input's gradient is complete), so it includes any time the GPU sat idle waiting
  for the host inside the call;
* **host**: ``time.perf_counter`` between the same points, which includes host syncs inside the call;

plus the caching allocator's ``num_alloc_retries`` (each one a synchronize-and-free) and reserved memory.
Events are read only once they have completed (``Event.query()``): the timers never synchronize the device, so
they change the step as little as CUDA events can. The step time minus the MoE layers' share is the rest of the
model; comparing both between ``--moe-comet`` and Megatron's layers shows where a step-time gap lives.
"""

from __future__ import annotations

import os
import re
import time
from collections import defaultdict, deque
from collections.abc import Iterable

import torch

ENV = "COMET_LAYER_TIMING"


def report_interval() -> int:
    """Calls per report from ``COMET_LAYER_TIMING`` (0: off). A value that is not an integer >= 0 is an error."""
    raw = os.environ.get(ENV, "0").strip() or "0"
    try:
        every = int(raw)
    except ValueError:
        every = -1
    if every < 0:
        raise ValueError(f"{ENV}={raw!r}: expected the number of calls per report (an integer >= 0; 0 turns it off)")
    return every


def _first_grad_tensor(values: Iterable) -> torch.Tensor | None:
    for value in values:
        if isinstance(value, torch.Tensor) and value.requires_grad:
            return value
        if isinstance(value, (tuple, list)):
            found = _first_grad_tensor(value)
            if found is not None:
                return found
    return None


class _Mark:
    """One point in time: host clock and, on CUDA, an event on the current stream."""

    __slots__ = ("host", "event")

    def __init__(self, cuda: bool):
        self.host = time.perf_counter()
        self.event = None
        if cuda:
            self.event = torch.cuda.Event(enable_timing=True)
            self.event.record()


class ModuleTimer:
    """Forward/backward timing of all modules of one kind (e.g. every MoE layer of the model).

    Args:
        kind: label printed in the report (``"moe"``, ``"attention"``).
        report_every: calls per report (forward calls; a backward is counted when it completes).
        rank: printed in the report.
        printer: where report lines go (``print`` by default; tests capture them).
    """

    def __init__(self, kind: str, report_every: int, rank: int = 0, printer=print):
        if report_every <= 0:
            raise ValueError(f"report_every must be > 0, got {report_every}")
        self.kind, self.report_every, self.rank, self.printer = kind, report_every, rank, printer
        self._pending: deque = deque()  # (phase, start, end) whose end mark exists
        self._sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])  # phase -> [gpu ms, host ms, n]
        self._handles: list = []
        self.reports: list[dict] = []

    # --- hooks ---
    def attach(self, module: torch.nn.Module) -> None:
        self._handles.append(module.register_forward_pre_hook(self._pre_forward, with_kwargs=True))
        self._handles.append(module.register_forward_hook(self._post_forward, with_kwargs=True))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _pre_forward(self, module, args, kwargs):
        self._drain()
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        call = {"cuda": cuda, "fwd_start": _Mark(cuda)}
        module._comet_timing_call = call
        x = _first_grad_tensor((*args, *kwargs.values()))
        if x is not None and torch.is_grad_enabled():
            call["input"] = x
        return None

    def _post_forward(self, module, args, kwargs, output):
        call = module.__dict__.pop("_comet_timing_call", None)
        if call is None:
            return None
        cuda = call["cuda"]
        self._pending.append(("fwd", call["fwd_start"], _Mark(cuda)))
        x = call.pop("input", None)
        y = _first_grad_tensor(output if isinstance(output, (tuple, list)) else (output,))
        if x is not None and y is not None:
            backward = {}

            def output_grad_ready(grad):
                backward["start"] = _Mark(cuda)

            def input_grad_ready(grad):
                if "start" in backward:
                    self._pending.append(("bwd", backward.pop("start"), _Mark(cuda)))

            y.register_hook(output_grad_ready)
            x.register_hook(input_grad_ready)
        return None

    # --- accounting ---
    def flush(self) -> None:
        """Wait for the recorded events and report what has accumulated (end of a run, tests)."""
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        self._drain()
        if self._sums:
            self._report()

    def _drain(self) -> None:
        while self._pending:
            phase, start, end = self._pending[0]
            if end.event is not None and not end.event.query():
                return
            self._pending.popleft()
            gpu = start.event.elapsed_time(end.event) if end.event is not None else float("nan")
            sums = self._sums[phase]
            sums[0] += gpu
            sums[1] += (end.host - start.host) * 1e3
            sums[2] += 1
        if self._sums["fwd"][2] >= self.report_every:
            self._report()

    def _report(self) -> None:
        report: dict = {"kind": self.kind, "rank": self.rank}
        parts = []
        for phase in ("fwd", "bwd"):
            gpu, host, n = self._sums[phase]
            if n:
                report[phase] = {"calls": n, "gpu_ms": gpu / n, "host_ms": host / n}
                parts.append(f"{phase} gpu {gpu / n:7.3f} host {host / n:7.3f} ms ({n} calls)")
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            stats = torch.cuda.memory_stats()
            report["alloc_retries"] = stats.get("num_alloc_retries", 0)
            report["reserved_gib"] = stats.get("reserved_bytes.all.current", 0) / 2**30
            parts.append(f"alloc retries {report['alloc_retries']} reserved {report['reserved_gib']:.2f} GiB")
        self.reports.append(report)
        self.printer(f"[comet-layer-timing] rank {self.rank} {self.kind}: " + " | ".join(parts))
        self._sums.clear()


def attach_timers(model, report_every: int, rank: int = 0, printer=print) -> dict[str, ModuleTimer]:
    """Timers on every MoE layer and attention module of ``model`` (a module or a list of them, as Megatron's
    ``forward_step`` receives). Returns ``{kind: ModuleTimer}`` for the kinds found."""
    from megatron.core.transformer.attention import Attention
    from megatron.core.transformer.moe.moe_layer import MoELayer

    kinds = {"moe": MoELayer, "attention": Attention}
    timers: dict[str, ModuleTimer] = {}
    for chunk in model if isinstance(model, (list, tuple)) else [model]:
        for module in chunk.modules():
            for kind, cls in kinds.items():
                if isinstance(module, cls):
                    if kind not in timers:
                        timers[kind] = ModuleTimer(kind, report_every, rank, printer)
                    timers[kind].attach(module)
    return timers


_LINE = re.compile(r"\[comet-layer-timing\] rank (\d+) (\w+): (.*)")
_PHASE = re.compile(r"(fwd|bwd) gpu\s+([\d.na]+) host\s+([\d.]+) ms \((\d+) calls\)")


def summarize_log(path: str, skip_reports: int = 2) -> dict:
    """Call-weighted means of a training log's timing reports: ``{kind: {rank: {phase: {gpu_ms, host_ms, calls}}}}``.
    The first ``skip_reports`` reports of each (rank, kind) are warm-up (compilation, first allocations)."""
    seen: dict = defaultdict(int)
    sums: dict = defaultdict(lambda: [0.0, 0.0, 0])
    with open(path, errors="replace") as log:
        for line in log:
            match = _LINE.search(line)
            if not match:
                continue
            rank, kind, rest = int(match[1]), match[2], match[3]
            seen[rank, kind] += 1
            if seen[rank, kind] <= skip_reports:
                continue
            for phase, gpu, host, calls in _PHASE.findall(rest):
                n = int(calls)
                acc = sums[kind, rank, phase]
                acc[0] += float(gpu) * n
                acc[1] += float(host) * n
                acc[2] += n
    out: dict = {}
    for (kind, rank, phase), (gpu, host, n) in sorted(sums.items()):
        out.setdefault(kind, {}).setdefault(rank, {})[phase] = {"gpu_ms": gpu / n, "host_ms": host / n, "calls": n}
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m comet_megatron.megatron.layer_timing LOG [LOG ...]``: one table row per (log, kind, rank)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("logs", nargs="+")
    parser.add_argument("--skip-reports", type=int, default=2)
    parser.add_argument("--json", help="also write the summaries here")
    args = parser.parse_args(argv)
    summaries = {path: summarize_log(path, args.skip_reports) for path in args.logs}
    print(f"{'log':40s} {'kind':10s} rank  fwd gpu/host ms   bwd gpu/host ms   calls")
    for path, summary in summaries.items():
        for kind, ranks in summary.items():
            for rank, phases in ranks.items():
                fwd, bwd = phases.get("fwd", {}), phases.get("bwd", {})
                print(
                    f"{os.path.basename(path)[:40]:40s} {kind:10s} {rank:4d}  "
                    f"{fwd.get('gpu_ms', float('nan')):6.2f}/{fwd.get('host_ms', float('nan')):6.2f}    "
                    f"{bwd.get('gpu_ms', float('nan')):6.2f}/{bwd.get('host_ms', float('nan')):6.2f}    "
                    f"{fwd.get('calls', 0)}"
                )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(summaries, out, indent=1)


if __name__ == "__main__":
    main()
