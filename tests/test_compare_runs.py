"""examples/compare_runs.py reads Megatron's iteration lines and compares two runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scripts import load_script

compare_runs = load_script("examples/compare_runs.py")


def _line(it: int, ms: float, loss: float) -> str:
    # the format of megatron/training/training.py's training_log (0.19), with the MoE metrics
    return (
        f" [2026-11-23 10:00:{it:02d}.000000] iteration {it:8d}/     100 | consumed samples: {8 * it:12d} |"
        f" elapsed time per iteration (ms): {ms:.1f} | throughput per GPU (TFLOP/s/GPU): 312.5 |"
        f" learning rate: 9.999000E-05 | global batch size:     8 | lm loss: {loss:.6E} |"
        f" load_balancing_loss: 1.002000E+00 | loss scale: 1.0 | grad norm: 3.141 |"
        f" number of skipped iterations:   0 | number of nan iterations:   0 |"
    )


def _write(path: Path, losses, times) -> Path:
    lines = ["noise | iteration without numbers", "[rank0]: warning"]
    lines += [_line(i + 1, t, loss) for i, (loss, t) in enumerate(zip(losses, times))]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_parse_and_compare(tmp_path):
    ref = _write(tmp_path / "a.log", [10.0, 8.0, 6.0, 5.0], [3000.0, 700.0, 720.0, 710.0])
    other = _write(tmp_path / "b.log", [10.0, 8.08, 6.0, 5.0], [2500.0, 600.0, 640.0, 620.0])
    rows = compare_runs.parse_log(ref)
    assert sorted(rows) == [1, 2, 3, 4]
    assert rows[2]["lm loss"] == 8.0 and rows[2]["elapsed time per iteration (ms)"] == 700.0
    assert rows[2]["global batch size"] == 8 and rows[2]["grad norm"] == pytest.approx(3.141)
    summary = compare_runs.main([str(ref), str(other), "--labels", "megatron", "comet", "--skip", "1"])
    assert summary["megatron"]["median_step_ms"] == 710.0
    assert summary["megatron"]["tokens_per_s"] == pytest.approx(8 * 4096 / 0.710)
    assert summary["comet"]["max_rel_loss_diff"] == pytest.approx(0.01)
    assert summary["comet"]["max_rel_loss_diff_at"] == 2
    assert summary["comet"]["rel_loss_diff_first_iteration"] == 0.0
    assert summary["comet"]["max_rel_loss_diff_first_10"] == pytest.approx(0.01)
    assert summary["comet"]["mean_loss_last_10"] == pytest.approx((10.0 + 8.08 + 6.0 + 5.0) / 4)
    assert summary["comet"]["speedup_vs_megatron"] == pytest.approx(710.0 / 620.0)


def test_logs_sharing_no_iteration_are_an_error(tmp_path):
    first = _write(tmp_path / "a.log", [10.0, 8.0], [1.0, 1.0])  # iterations 1, 2
    later = tmp_path / "b.log"
    later.write_text(_line(5, 1.0, 7.0) + "\n" + _line(6, 1.0, 6.5) + "\n")
    with pytest.raises(SystemExit, match="share no iteration"):
        compare_runs.main([str(first), str(later), "--skip", "0"])


def test_a_log_without_iterations_is_an_error(tmp_path):
    ref = _write(tmp_path / "a.log", [10.0, 8.0], [1.0, 1.0])
    empty = tmp_path / "b.log"
    empty.write_text("no iterations here\n")
    with pytest.raises(SystemExit, match="no iteration lines"):
        compare_runs.main([str(ref), str(empty), "--skip", "0"])
