"""Compare Megatron training logs (e.g. Megatron's alltoall layers vs --moe-comet from the same seed).

    python examples/compare_runs.py megatron.log comet.log [--labels megatron comet] [--seq 4096]
        [--skip 10] [--json summary.json] [--png curves.png]

Reads Megatron's iteration lines (``iteration N/M | ... elapsed time per iteration (ms): T | ...
global batch size: B | lm loss: L | ...``), and prints, per run, the median step time over the
iterations after ``--skip`` (warm-up, JIT compilation and the first allocations), tokens/s (B x seq /
step), the final loss, and, against the first run, the relative difference of the ``lm loss`` at
iteration 1 (same model and batch: numerics only), the largest over iterations 1-10 and over all the
iterations both logs have (bf16 runs drift apart as training amplifies rounding differences), and the
mean loss of the last 10. ``--png`` draws the loss curves and step times.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

_ITERATION = re.compile(r"iteration\s+(\d+)/\s*(\d+)\s*\|")
_FIELD = re.compile(r"\|\s*([A-Za-z][A-Za-z0-9_ ()/\-]*?):\s*([-+0-9.eEnaNinf]+)\s*(?=\|)")


def parse_log(path: str | Path) -> dict[int, dict[str, float]]:
    """``{iteration: {field: value}}`` from Megatron's iteration lines (the last one wins per iteration,
    so a resumed run's log can be concatenated after the first)."""
    rows: dict[int, dict[str, float]] = {}
    for line in Path(path).read_text(errors="replace").splitlines():
        match = _ITERATION.search(line)
        if not match:
            continue
        fields = {}
        for name, value in _FIELD.findall(line[match.end() - 1 :] + "|"):
            try:
                fields[name.strip()] = float(value)
            except ValueError:
                continue
        if "lm loss" in fields:
            rows[int(match.group(1))] = fields
    return rows


def summarize(rows: dict[int, dict[str, float]], seq: int, skip: int) -> dict[str, float]:
    iterations = sorted(rows)
    timed = [rows[i]["elapsed time per iteration (ms)"] for i in iterations if i > skip]
    if not timed:
        raise SystemExit(f"no iterations after --skip {skip} (the log has {len(iterations)})")
    step_ms = statistics.median(timed)
    batch = rows[iterations[-1]].get("global batch size", float("nan"))
    return {
        "iterations": len(iterations),
        "last_iteration": iterations[-1],
        "median_step_ms": step_ms,
        "tokens_per_s": batch * seq / (step_ms / 1e3),
        "first_loss": rows[iterations[0]]["lm loss"],
        "final_loss": rows[iterations[-1]]["lm loss"],
    }


def loss_agreement(reference: dict[int, dict[str, float]], other: dict[int, dict[str, float]]) -> dict[str, float]:
    common = sorted(set(reference) & set(other))
    if not common:
        raise SystemExit("the two logs share no iteration")
    rel = [abs(other[i]["lm loss"] - reference[i]["lm loss"]) / abs(reference[i]["lm loss"]) for i in common]
    worst = max(range(len(common)), key=rel.__getitem__)
    early = rel[: min(10, len(rel))]
    late = common[-min(10, len(common)) :]
    return {
        "common_iterations": len(common),
        # iteration 1 is the same model on the same batch: only the numerics differ
        "rel_loss_diff_first_iteration": rel[0],
        "max_rel_loss_diff_first_10": max(early),
        "max_rel_loss_diff": rel[worst],
        "max_rel_loss_diff_at": common[worst],
        "mean_rel_loss_diff": statistics.fmean(rel),
        "mean_loss_last_10": statistics.fmean(other[i]["lm loss"] for i in late),
        "reference_mean_loss_last_10": statistics.fmean(reference[i]["lm loss"] for i in late),
    }


def plot(runs: dict[str, dict[int, dict[str, float]]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_time) = plt.subplots(1, 2, figsize=(12, 4.2))
    for label, rows in runs.items():
        its = sorted(rows)
        ax_loss.plot(its, [rows[i]["lm loss"] for i in its], label=label, linewidth=1.2)
        ax_time.plot(its, [rows[i]["elapsed time per iteration (ms)"] for i in its], label=label, linewidth=1.2)
    ax_loss.set(xlabel="iteration", ylabel="lm loss", yscale="log", title="training loss")
    ax_time.set(xlabel="iteration", ylabel="ms per iteration", title="step time")
    times = [r["elapsed time per iteration (ms)"] for rows in runs.values() for i, r in rows.items() if i > 5]
    if times:
        ax_time.set_ylim(0, 1.3 * statistics.quantiles(times, n=20)[-1])
    for ax in (ax_loss, ax_time):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+", help="Megatron training logs; the first is the reference")
    parser.add_argument("--labels", nargs="+", help="one name per log (default: file stems)")
    parser.add_argument("--seq", type=int, default=4096, help="sequence length, for tokens/s")
    parser.add_argument("--skip", type=int, default=10, help="iterations left out of the step-time median")
    parser.add_argument("--json", help="write the summary here")
    parser.add_argument("--png", help="draw loss curves and step times here")
    args = parser.parse_args(argv)
    labels = args.labels or [Path(p).stem for p in args.logs]
    if len(labels) != len(args.logs):
        parser.error("--labels needs one name per log")
    runs = {label: parse_log(path) for label, path in zip(labels, args.logs)}
    for label, rows in runs.items():
        if not rows:
            raise SystemExit(f"{label}: no iteration lines with an lm loss")
    summary = {label: summarize(rows, args.seq, args.skip) for label, rows in runs.items()}
    reference_label = labels[0]
    for label in labels[1:]:
        summary[label].update(loss_agreement(runs[reference_label], runs[label]))
        summary[label]["speedup_vs_" + reference_label] = (
            summary[reference_label]["median_step_ms"] / summary[label]["median_step_ms"]
        )
    header = ("run", "iters", "step ms", "tokens/s", "final loss", "Δloss it1", "max Δ 1-10", "max Δ all", "speedup")
    print(f"{header[0]:<24}" + "".join(f"{h:>12}" for h in header[1:]))
    for label, s in summary.items():
        diffs = [
            f"{s[key]:.2e}" if key in s else "-"
            for key in ("rel_loss_diff_first_iteration", "max_rel_loss_diff_first_10", "max_rel_loss_diff")
        ]
        speed = f"{s['speedup_vs_' + reference_label]:.3f}" if label != reference_label else "1.000"
        print(
            f"{label:<24}{s['iterations']:>12}{s['median_step_ms']:>12.1f}{s['tokens_per_s']:>12.0f}"
            f"{s['final_loss']:>12.4f}" + "".join(f"{d:>12}" for d in diffs) + f"{speed:>12}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    if args.png:
        plot(runs, args.png)
    return summary


if __name__ == "__main__":
    sys.exit(main() and 0)
