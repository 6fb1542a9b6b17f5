"""The Nsight Compute probes: ncu_targets.py (what a target runs, refused targets) and ncu_stalls.py (stall samples per
SASS instruction from the source-page CSV)."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

PROBES = Path(__file__).resolve().parents[1] / "benchmarks" / "probes"
_SPEC = importlib.util.spec_from_file_location("ncu_stalls", PROBES / "ncu_stalls.py")
ncu_stalls = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(ncu_stalls)

# the columns of `ncu --page source --csv --print-source sass` that the summary reads, in the tool's order
HEADER = [
    "Address",
    "Source",
    "Warp Stall Sampling (All Samples)",
    "Warp Stall Sampling (Not-issued Samples)",
    "Instructions Executed",
    "stall_barrier",
    "stall_long_sb",
    "stall_wait",
    "stall_barrier (Not Issued)",
]


def _block(name: str, rows: list[list]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerow(["Kernel Name", name])
    writer.writerow(HEADER)
    writer.writerows(rows)
    return out.getvalue()


def _report(tmp_path) -> Path:
    fill = _block("void at::native::vectorized_elementwise_kernel<Fill>", [["0x10", "EXIT", 5, 5, 1, 0, 5, 0, 0]])
    wgrad = _block(
        "grouped_wgrad_accumulate_kernel",
        [
            ["0x7f00", "@!P0  BRA 0x7fff", "600", "590", "3,239,936", 0, 600, 0, 0],
            ["0x7f10", "BAR.SYNC.DEFER_BLOCKING 0x0", 300, 290, 917504, 250, 50, 0, 250],
            ["0x7f20", "HGMMA.64x128x16.F32.BF16 R24, gdesc[UR24], R24", 100, 60, 3239936, 0, 0, 100, 0],
            ["0x7f30", "@P2 SYNCS.ARRIVE.TRANS64 RZ, [UR7+0x18000], R7", 0, 0, 3239936, 0, 0, 0, 0],
        ],
    )
    path = tmp_path / "source.csv"
    path.write_text(fill + wgrad)
    return path


def test_hottest_instructions_opcodes_and_reasons(tmp_path, capsys):
    out = tmp_path / "summary.json"
    ncu_stalls.main([str(_report(tmp_path)), "--kernel", "grouped_wgrad", "--top", "2", "--json", str(out)])
    summary = json.loads(out.read_text())
    assert summary["kernel"] == "grouped_wgrad_accumulate_kernel"  # the second block, not the fill kernel's
    assert summary["samples"] == 1000 and summary["instructions"] == 4
    assert [h["source"] for h in summary["hottest"]] == ["@!P0  BRA 0x7fff", "BAR.SYNC.DEFER_BLOCKING 0x0"]
    assert summary["hottest"][0]["share"] == 0.6 and summary["hottest"][0]["executed"] == 3239936
    assert summary["hottest"][1]["reasons"] == {"barrier": 0.25, "long_sb": 0.05}  # "Not Issued" columns excluded
    assert summary["by_opcode"] == {"BRA": 0.6, "BAR": 0.3, "HGMMA": 0.1}  # predicates and modifiers stripped
    assert summary["by_reason"] == {"long_sb": 0.65, "barrier": 0.25, "wait": 0.1}
    printed = capsys.readouterr().out
    assert "60.0%" in printed and "by reason: long_sb 65.0%" in printed


def test_unknown_kernel_and_missing_samples_name_the_problem(tmp_path):
    with pytest.raises(SystemExit, match="no kernel whose name contains 'fc2'.*grouped_wgrad_accumulate_kernel"):
        ncu_stalls.main([str(_report(tmp_path)), "--kernel", "fc2"])
    bare = tmp_path / "bare.csv"
    bare.write_text('"Kernel Name","k"\n"Address","Source"\n"0x1","EXIT"\n')
    with pytest.raises(SystemExit, match="no 'Warp Stall Sampling \\(All Samples\\)' column.*SourceCounters"):
        ncu_stalls.main([str(bare), "--kernel", "k"])


@pytest.mark.parametrize(
    "source,op", [("@!UP1 SYNCS.EXCH.64 URZ, [UR17]", "SYNCS"), ("HGMMA.64x128x16.F32.BF16 R24", "HGMMA"), ("", "")]
)
def test_opcode(source, op):
    assert ncu_stalls.opcode(source) == op


def _targets(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PROBES / "ncu_targets.py"), *args], capture_output=True, text=True, timeout=120
    )


def test_targets_list_names_every_kind_and_shape():
    done = _targets("--list", "--tokens", "4096")
    assert done.returncode == 0, done.stderr
    kinds = [line.split(":")[0] for line in done.stdout.splitlines()]
    assert kinds == ["fc1", "gm_fc1", "wgrad", "gm_wgrad", "rmw"]
    assert "H 4096, F 14336, 4 local experts of 8, top-2, 4096 tokens per rank, EP=2 share" in done.stdout


@pytest.mark.parametrize("target", ["fc3:mixtral-8x7b", "wgrad:mixtral", "wgrad"])
def test_targets_refuse_unknown_kinds_and_cases(target):
    done = _targets(target)
    assert done.returncode == 2 and f"target {target!r}: expected KIND:CASE" in done.stderr
