"""In-situ timing of Megatron modules during training: what one MoE layer, its router and experts, or attention
cost inside a real step.

``COMET_LAYER_TIMING=N`` (read by the pretrain entry point) attaches a :class:`comet_megatron.timing.SectionTimer`
per module kind to every ``MoELayer`` (Megatron's and Comet's), its router and its experts, and every attention
module; each rank prints the mean forward (``fwd``) and backward (``bwd``: from the output's gradient arriving to
the input's gradient being complete) GPU and host time of one call every ``N`` calls (``comet_megatron.timing``
says what the numbers include). The fused backend adds its own phases as kind ``fused``. The step time minus the
MoE layers' share is the rest of the model; comparing both between ``--moe-comet`` and Megatron's layers shows
where a step-time gap lives. ``python -m comet_megatron.megatron.layer_timing LOG...`` summarizes logs.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterable

import torch

from comet_megatron.timing import (
    ENV,
    TAG,
    Mark,
    SectionTimer,
    flush_at_exit,
    report_interval,
    stop_timing_garbage_collections,
    time_garbage_collections,
)

__all__ = ["ENV", "ModuleTimer", "attach_timers", "main", "report_interval", "summarize_log"]


def _first_grad_tensor(values: Iterable) -> torch.Tensor | None:
    for value in values:
        if isinstance(value, torch.Tensor) and value.requires_grad:
            return value
        if isinstance(value, (tuple, list)):
            found = _first_grad_tensor(value)
            if found is not None:
                return found
    return None


class ModuleTimer(SectionTimer):
    """Sections ``fwd`` and ``bwd`` of every module attached (all modules of one kind, e.g. every MoE layer)."""

    def __init__(self, kind: str, report_every: int, rank: int = 0, printer=print):
        super().__init__(kind, report_every, rank, printer)
        self._handles: list = []

    def attach(self, module: torch.nn.Module) -> None:
        self._handles.append(module.register_forward_pre_hook(self._pre_forward, with_kwargs=True))
        self._handles.append(module.register_forward_hook(self._post_forward, with_kwargs=True))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        stop_timing_garbage_collections(self)

    def _pre_forward(self, module, args, kwargs):
        call = {"start": Mark()}
        x = _first_grad_tensor((*args, *kwargs.values()))
        if x is not None and torch.is_grad_enabled():
            call["input"] = x
        module.__dict__.setdefault("_comet_timing_calls", {})[self.kind] = call
        return None

    def _post_forward(self, module, args, kwargs, output):
        call = module.__dict__.get("_comet_timing_calls", {}).pop(self.kind, None)
        if call is None:
            return None
        self.add("fwd", call["start"], Mark())
        x = call.get("input")
        y = _first_grad_tensor(output if isinstance(output, (tuple, list)) else (output,))
        if x is not None and y is not None:
            backward: dict = {}

            def output_grad_ready(grad):
                backward["start"] = Mark()

            def input_grad_ready(grad):
                if "start" in backward:
                    self.add("bwd", backward.pop("start"), Mark())

            y.register_hook(output_grad_ready)
            x.register_hook(input_grad_ready)
        return None


def attach_timers(model, report_every: int, rank: int = 0, printer=print) -> dict[str, ModuleTimer]:
    """Timers on every MoE layer (``moe``), its ``router`` and ``experts``, and every ``attention`` module of
    ``model`` (a module or a list of them, as Megatron's ``forward_step`` receives). Returns ``{kind: timer}``."""
    from megatron.core.transformer.attention import Attention
    from megatron.core.transformer.moe.moe_layer import MoELayer

    timers: dict[str, ModuleTimer] = {}

    def attach(kind: str, module) -> None:
        if kind not in timers:
            timers[kind] = flush_at_exit(ModuleTimer(kind, report_every, rank, printer))
        timers[kind].attach(module)

    for chunk in model if isinstance(model, (list, tuple)) else [model]:
        for module in chunk.modules():
            if isinstance(module, MoELayer):
                attach("moe", module)
                attach("router", module.router)
                attach("experts", module.experts)
            elif isinstance(module, Attention):
                attach("attention", module)
    if timers:
        timers["python"] = flush_at_exit(ModuleTimer("python", report_every, rank, printer))
        time_garbage_collections(timers["python"])
    return timers


_LINE = re.compile(re.escape(TAG) + r" rank (\d+) (\w+): (.*)")
_SECTION = re.compile(
    r"^([\w.]+) gpu\s+([\d.na]+) host\s+([\d.]+)(?: cpu\s+([\d.]+))? ms \((\d+) calls(?:, host max ([\d.]+))?\)$"
)
_VALUE = re.compile(r"^([\w.]+) ([\d.]+)$")


def summarize_log(path: str, skip_reports: int = 2, last_report: int | None = None) -> dict:
    """Means over a training log's timing reports: ``{kind: {rank: {label: {gpu_ms, host_ms, calls, host_max_ms[,
    cpu_ms]}}}}`` for sections
    (weighted by calls) and ``{kind: {rank: {label: {value}}}}`` for noted values (mean of the reports' means).
    The first ``skip_reports`` reports of each (rank, kind) are warm-up (compilation, first allocations); reports after
    the ``last_report``-th (1-based, counted per rank and kind) are left out, so that a window of the run can be
    compared (the step time changes as a run trains)."""
    if last_report is not None and last_report <= skip_reports:
        raise ValueError(f"--last-report {last_report} must be above --skip-reports {skip_reports}")
    seen: dict = defaultdict(int)
    sections: dict = defaultdict(lambda: [0.0, 0.0, 0, 0.0, 0.0, 0])  # gpu, host, n, host max, cpu, n with cpu
    values: dict = defaultdict(lambda: [0.0, 0])
    with open(path, errors="replace") as log:
        for line in log:
            match = _LINE.search(line)
            if not match:
                continue
            rank, kind = int(match[1]), match[2]
            seen[rank, kind] += 1
            if seen[rank, kind] <= skip_reports or (last_report is not None and seen[rank, kind] > last_report):
                continue
            for part in match[3].split(" | "):
                part = part.strip()
                if found := _SECTION.match(part):
                    n = int(found[5])
                    acc = sections[kind, rank, found[1]]
                    acc[0] += float(found[2]) * n
                    acc[1] += float(found[3]) * n
                    acc[2] += n
                    acc[3] = max(acc[3], float(found[6] or 0.0))
                    if found[4] is not None:  # reports before thread CPU time was recorded have none
                        acc[4] += float(found[4]) * n
                        acc[5] += n
                elif (found := _VALUE.match(part)) and not part.startswith("reserved"):
                    acc = values[kind, rank, found[1]]
                    acc[0] += float(found[2])
                    acc[1] += 1
    out: dict = {}
    for (kind, rank, label), (gpu, host, n, host_max, cpu, n_cpu) in sorted(sections.items()):
        stat = {"gpu_ms": gpu / n, "host_ms": host / n, "calls": n, "host_max_ms": host_max}
        if n_cpu:
            stat["cpu_ms"] = cpu / n_cpu
        out.setdefault(kind, {}).setdefault(rank, {})[label] = stat
    for (kind, rank, label), (total, n) in sorted(values.items()):
        out.setdefault(kind, {}).setdefault(rank, {})[label] = {"value": total / n}
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m comet_megatron.megatron.layer_timing LOG [LOG ...]``: one row per (log, kind, rank, label)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("logs", nargs="+")
    parser.add_argument("--skip-reports", type=int, default=2, help="warm-up reports per rank and kind (default 2)")
    parser.add_argument(
        "--last-report",
        type=int,
        default=None,
        help="leave out the reports after this one (1-based, per rank and kind): with --skip-reports, a window of the "
        "run (a report covers COMET_LAYER_TIMING calls of the kind's most frequent section)",
    )
    parser.add_argument("--json", help="also write the summaries here")
    args = parser.parse_args(argv)
    try:
        summaries = {path: summarize_log(path, args.skip_reports, args.last_report) for path in args.logs}
    except ValueError as exc:  # the window's bounds, checked once in summarize_log
        parser.error(str(exc))
    print(
        f"{'log':34s} {'kind':9s} rank {'label':22s} {'gpu ms':>8s} {'host ms':>8s} {'calls':>6s} {'host max':>8s} "
        f"{'cpu ms':>8s}"
    )
    for path, summary in summaries.items():
        for kind, ranks in summary.items():
            for rank, labels in ranks.items():
                for label, stat in labels.items():
                    name = os.path.basename(path)[:34]
                    if "value" in stat:
                        print(f"{name:34s} {kind:9s} {rank:4d} {label:22s} {stat['value']:8.1f}")
                    else:
                        print(
                            f"{name:34s} {kind:9s} {rank:4d} {label:22s} {stat['gpu_ms']:8.3f} {stat['host_ms']:8.3f} "
                            f"{stat['calls']:6d} {stat['host_max_ms']:8.3f} {stat.get('cpu_ms', float('nan')):8.3f}"
                        )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(summaries, out, indent=1)


if __name__ == "__main__":
    main()
