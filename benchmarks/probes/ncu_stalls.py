#!/usr/bin/env python3
"""Where a kernel's warps stall, per SASS instruction, from Nsight Compute's source page.

Input: ``ncu -i REPORT.ncu-rep --page source --csv --print-source sass > FILE.csv`` of a report collected with
``--section SourceCounters`` (``notes/device/s26_call2_ncu_source.sh``). The file holds one block per profiled kernel,
each starting with a ``"Kernel Name","<name>"`` line. For the kernel whose name contains ``--kernel``, prints the
instructions with the most warp-stall samples, each with its share of all the kernel's samples, its execution count
and its top stall reasons, then the shares per opcode and per reason.

What it showed (session 26, one H200, ``benchmarks/results/s26/ncu/``):
  - DSv3-like's accumulating weight-gradient kernel: 29% of the samples at the wait for a TMA operand tile (about 3.5
    K-steps per program: the first load's latency is seldom hidden) and 20% at the barrier behind the TMA reduce's
    ``wait_group.read 0`` at the program's end, with 2 programs of 4 warps per SM;
  - dispatch ⊕ fc1 on Mixtral: 37% of the samples are CTA-barrier stalls, 31% behind the barriers that Triton's (not
    warp-specialized) pipeline puts around each K-step's TMA issue; tensor pipe 80.8% busy against CUTLASS's 93.4%.

  python benchmarks/probes/ncu_stalls.py FILE.csv --kernel grouped_wgrad [--top 25] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys

SAMPLES = "Warp Stall Sampling (All Samples)"
EXECUTED = "Instructions Executed"
REASON_PREFIX = "stall_"


def kernel_rows(text: str, kernel: str) -> tuple[str, list[dict]]:
    """The rows of the first kernel block whose name contains ``kernel``: (full name, one dict per instruction)."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith('"Kernel Name",')]
    names = [next(csv.reader([lines[i]]))[1] for i in starts]
    for n, (i, name) in enumerate(zip(starts, names)):
        if kernel in name:
            end = starts[n + 1] if n + 1 < len(starts) else len(lines)
            reader = csv.DictReader(io.StringIO("\n".join(lines[i + 1 : end])))
            if not reader.fieldnames or SAMPLES not in reader.fieldnames:
                raise ValueError(f"kernel {name!r}: no {SAMPLES!r} column (collect with --section SourceCounters)")
            return name, [row for row in reader if row.get("Address")]
    raise ValueError(f"no kernel whose name contains {kernel!r}; kernels in the file: {', '.join(names) or 'none'}")


def _number(text: str | None) -> float:
    try:
        return float((text or "").replace(",", ""))
    except ValueError:
        return 0.0


def opcode(source: str) -> str:
    """``@!P0 BRA 0x...`` -> ``BRA``; ``HGMMA.64x128x16.F32.BF16 ...`` -> ``HGMMA``."""
    words = source.split()
    if words and words[0].startswith("@"):
        words = words[1:]
    return words[0].split(".")[0] if words else ""


def summarize(rows: list[dict], top: int) -> dict:
    total = sum(_number(r[SAMPLES]) for r in rows)
    if total <= 0:
        raise ValueError("the kernel has no stall samples")
    reasons = [k for k in rows[0] if k.startswith(REASON_PREFIX) and "Not Issued" not in k]
    hottest = sorted(rows, key=lambda r: -_number(r[SAMPLES]))[:top]
    by_opcode: dict[str, float] = {}
    by_reason = dict.fromkeys((k[len(REASON_PREFIX) :] for k in reasons), 0.0)
    for r in rows:
        op = opcode(r["Source"])
        by_opcode[op] = by_opcode.get(op, 0.0) + _number(r[SAMPLES])
        for k in reasons:
            by_reason[k[len(REASON_PREFIX) :]] += _number(r[k])

    def shares(d: dict[str, float]) -> dict[str, float]:
        return {k: round(v / total, 4) for k, v in sorted(d.items(), key=lambda kv: -kv[1]) if v > 0}

    return {
        "samples": total,
        "instructions": len(rows),
        "hottest": [
            {
                "address": r["Address"],
                "source": r["Source"].strip(),
                "share": round(_number(r[SAMPLES]) / total, 4),
                "executed": _number(r.get(EXECUTED)),
                "reasons": {
                    k[len(REASON_PREFIX) :]: round(_number(r[k]) / total, 4)
                    for k in sorted(reasons, key=lambda k: -_number(r[k]))[:3]
                    if _number(r[k]) > 0
                },
            }
            for r in hottest
        ],
        "by_opcode": shares(by_opcode),
        "by_reason": shares(by_reason),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("csv", help="ncu --page source --csv --print-source sass output")
    p.add_argument("--kernel", required=True, help="a substring of the kernel's name")
    p.add_argument("--top", type=int, default=25, help="instructions to list (default 25)")
    p.add_argument("--json", default=None, help="also write the summary here")
    args = p.parse_args(argv)
    with open(args.csv) as fh:
        text = fh.read()
    try:
        name, rows = kernel_rows(text, args.kernel)
        summary = {"kernel": name} | summarize(rows, args.top)
    except ValueError as exc:
        sys.exit(f"ncu_stalls.py: {exc}")
    print(f"{name[:100]}: {summary['samples']:.0f} stall samples over {summary['instructions']} instructions")
    for h in summary["hottest"]:
        why = " ".join(f"{k} {v:.1%}" for k, v in h["reasons"].items())
        print(f"{h['share']:6.1%} {h['executed']:>12.0f}  {h['address'][-6:]}  {h['source'][:70]:70s} {why}")
    print("by opcode: " + ", ".join(f"{k} {v:.1%}" for k, v in list(summary["by_opcode"].items())[:10]))
    print("by reason: " + ", ".join(f"{k} {v:.1%}" for k, v in list(summary["by_reason"].items())[:8]))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=1)


if __name__ == "__main__":
    main()
