"""benchmarks/bench_layer.py: the kernel-config sweep's argument checks and the kernel table (no processes)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.scripts import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/bench_layer.py")


def test_comet_configs_add_one_variant_each(bench):
    args = bench.parse_args(
        ["--variants", "megatron,comet", "--comet-configs", '[{"fc2_block_n": 256}, {"num_stages": 3}]', "--out", "x"]
    )
    assert args.variants == ["megatron", "comet", "comet_cfg0", "comet_cfg1"]
    assert args.comet_configs == [{"fc2_block_n": 256}, {"num_stages": 3}]


@pytest.mark.parametrize(
    "text, message",
    [
        ('[{"fc2_blockn": 256}]', "unknown KernelConfig field(s) ['fc2_blockn']"),
        ('{"fc2_block_n": 256}', "must be a JSON list of objects"),
        ("[{fc2_block_n: 256}]", "is not JSON"),
        ('[{"epilogue_split": 3}]', "epilogue_split=3 must be 1 or 2"),
        ('[{"dgrad_block_n": 96}]', "dgrad_block_n=96 must be powers of two"),
    ],
)
def test_bad_comet_configs_name_the_option(bench, capsys, text, message):
    with pytest.raises(SystemExit):
        bench.parse_args(["--comet-configs", text])
    err = capsys.readouterr().err
    assert "--comet-configs" in err and message in err


def test_kernel_table_lists_each_profiled_variant(bench):
    results = {
        "cases": {
            "mixtral": {
                "variants": {
                    "megatron": {"kernels_ms": {"gemm": 2.5, "_all": 3.0}, "kernels_scope": "fwd+bwd"},
                    "comet": "FAIL something",
                }
            }
        }
    }
    text = bench.kernel_tables(results)
    assert "mixtral / megatron" in text and "(all: 3.0)" in text and "gemm" in text
    assert "comet" not in text


@pytest.fixture(scope="module")
def gemm_core():
    return load_script("benchmarks/bench_gemm_core.py")


def test_gemm_core_bench_takes_the_same_configs(gemm_core, capsys):
    args = gemm_core.parse_args(["--configs", '[{}, {"epilogue_split": 1, "dgrad_block_n": 128}]'])
    base = gemm_core.KernelConfig(comm_programs=20, fc2_block_n=256)  # as default_config may choose
    configs = gemm_core.kernel_configs(base, args.overrides)
    assert configs[0] == base
    assert (configs[1].epilogue_split, configs[1].dgrad_block_n, configs[1].fc2_block_n) == (1, 128, 256)
    assert gemm_core.parse_args([]).overrides == [{}]
    with pytest.raises(SystemExit):
        gemm_core.parse_args(["--configs", '[{"block_k": 8}]'])
    assert "block_k=8 must be at least 16" in capsys.readouterr().err


def test_gemm_core_chart_from_a_report(gemm_core, tmp_path):
    pytest.importorskip("matplotlib")
    ms = {k: 1.0 + i for i, k in enumerate(gemm_core.KERNELS)}
    report = {
        "case": "mixtral-8x7b",
        "shape": {"tokens": 4096},
        "ep_simulated": 2,
        "device": "GPU",
        "configs": [{"overrides": {}, "ms": ms}, {"overrides": {"num_stages": 3}, "error": "OutOfResources"}],
        "baseline_ms": {b: 2.0 for b in gemm_core.BASELINE_OF.values()},
        "floor_ms": {"fc1": 0.5, "fc2": 0.25, "fc2_dgrad": 0.25, "fc1_dgrad": 0.5},
    }
    assert gemm_core.plot(report, str(tmp_path / "c.png")).startswith("chart written")
    assert (tmp_path / "c.png").stat().st_size > 0


def test_host_profile_prints_the_functions_a_forward_spends_host_time_in(bench, capsys):
    env = bench.Env(rank=0, ws=1, local_rank=0, cpu=True, dev=bench.torch.device("cpu"), dtype=None, args=None)

    def plan_rows():
        return sorted(range(2000), key=lambda i: -i)

    def forward():
        plan_rows()

    per_call = bench.host_profile(forward, env, iters=3, label="case comet")
    out = capsys.readouterr().out
    assert per_call > 0
    assert "host profile case comet: 3 forward calls" in out and "plan_rows" in out
    assert bench.parse_args(["--host-profile", "4"]).host_profile == 4


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--tune", "--cpu-smoke"], "--tune times the fused kernels: it needs GPUs"),
        (["--tune", "--comet-configs", '[{"num_stages": 3}]'], "--tune makes its own comet_cfg<i> variants"),
    ],
)
def test_tune_refuses_what_it_cannot_do(bench, capsys, argv, message):
    with pytest.raises(SystemExit):
        bench.parse_args([*argv, "--out", "x"])
    assert message in capsys.readouterr().err


def test_tuned_choice_is_the_fastest_timed_candidate(bench):
    entry = {
        "variants": {
            "comet": {"fwdbwd_ms": 1.0, "kernel_config": {"comm_programs": 99}},  # not a candidate
            "comet_cfg0": {"fwdbwd_ms": 5.0, "kernel_config": {"comm_programs": 16}},
            "comet_cfg1": {"fwdbwd_ms": 4.0, "kernel_config": {"comm_programs": 8}},
            "comet_cfg2": {"fwdbwd_ms": "FAIL out of memory", "kernel_config": {"comm_programs": 26}},
            "comet_cfg3": "FAIL inputs: boom",
            "comet_cfg4": {"fwdbwd_ms": 4.5, "kernel_config": {"comm_programs": 40}},
        }
    }
    assert bench.tuned_choice(entry, "fwdbwd_ms") == ({"comm_programs": 8}, 4.0, 3)
    assert bench.tuned_choice({"variants": {"comet": entry["variants"]["comet"]}}, "fwdbwd_ms") is None


def test_tune_times_every_candidate_of_the_current_choice(bench):
    from comet_megatron.tuning import CANDIDATE_COUNT

    args = bench.parse_args(["--tune", "--variants", "comet", "--out", "x"])
    sweeps = [v for v in args.variants if v.startswith(bench.SWEEP_PREFIX)]
    assert sweeps == [f"{bench.SWEEP_PREFIX}{i}" for i in range(CANDIDATE_COUNT)]


def test_source_digest_follows_the_code_not_the_git_head(bench, tmp_path):
    for rel, text in (("comet_megatron/a.py", "x = 1\n"), ("kernels/k.py", "y = 2\n"), ("README.md", "doc\n")):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    before = bench.source_digest(str(tmp_path))
    (tmp_path / "README.md").write_text("other doc\n")  # not code: same digest
    assert bench.source_digest(str(tmp_path)) == before
    (tmp_path / "kernels" / "k.py").write_text("y = 3\n")
    assert bench.source_digest(str(tmp_path)) != before
    assert len(bench.source_digest(bench.REPO_ROOT)) == 64


def test_sweep_variants_build_their_config_over_the_case_choice(bench, monkeypatch):
    import types

    from comet_megatron.tuning import KernelConfig, candidate_configs

    monkeypatch.setattr(
        bench.torch.cuda, "get_device_properties", lambda dev: types.SimpleNamespace(multi_processor_count=132)
    )
    base = KernelConfig(comm_programs=30, dgrad_comm_programs=40)
    tuned = types.SimpleNamespace(args=bench.parse_args(["--tune", "--variants", "comet", "--out", "x"]), dev=None)
    assert bench.sweep_config("comet", tuned, base) is None
    assert bench.sweep_config("comet_cfg0", tuned, base) == base
    assert bench.sweep_config("comet_cfg3", tuned, base) == candidate_configs(base, 132)[3]
    assert "candidate 3" in bench.sweep_description("comet_cfg3", tuned)
    swept = types.SimpleNamespace(
        args=bench.parse_args(["--variants", "comet", "--comet-configs", '[{"num_stages": 3}]', "--out", "x"]), dev=None
    )
    assert bench.sweep_config("comet_cfg0", swept, base) == KernelConfig(
        comm_programs=30, dgrad_comm_programs=40, num_stages=3
    )
    assert "num_stages" in bench.sweep_description("comet_cfg0", swept)


def test_tuned_config_is_stored_under_the_backend_shape_key(bench, tmp_path, monkeypatch):
    from comet_megatron import tuning

    monkeypatch.setenv("COMET_TUNING_CACHE", str(tmp_path / "tuning.json"))
    key = tuning.ShapeKey(4096, 4096, 14336, 8, 2, 2, "NVIDIA H200", 132)
    fast = dataclasses.asdict(tuning.KernelConfig(comm_programs=24))
    entry = {
        "variants": {
            "comet_cfg0": {"fwdbwd_ms": 5.0, "kernel_config": {}, "shape_key": dataclasses.asdict(key)},
            "comet_cfg1": {"fwdbwd_ms": 4.0, "kernel_config": fast, "shape_key": dataclasses.asdict(key)},
        }
    }
    stored = bench.store_tuned("mixtral-8x7b", entry, "fwdbwd_ms")
    assert stored["stored"] and stored["key"] == key.as_str() and stored["fwdbwd_ms"] == 4.0
    assert tuning.choose_config(key) == tuning.KernelConfig(comm_programs=24)
    assert bench.store_tuned("x", {"variants": {}}, "fwdbwd_ms")["stored"] is False


def test_gemm_core_bench_plans_follow_the_tile_order_option(gemm_core, capsys):
    """``--configs '[{"own_rows_first": false}]'`` reaches the plans the bench times (expert-major M-tiles)."""
    args = gemm_core.parse_args(["--configs", '[{}, {"own_rows_first": false}]'])
    configs = gemm_core.kernel_configs(gemm_core.KernelConfig(), args.overrides)
    assert [c.own_rows_first for c in configs] == [True, False]
    prob = object.__new__(gemm_core.Problem)  # the plans need only the counts and the workspace's flag stride
    # EP=2, 2 local experts at rank 0: 200 / 300 own rows, 100 / 70 from rank 1 (own-rows-first differs there)
    prob.counts = torch.tensor([[200, 300, 5, 9], [100, 70, 7, 3]])
    prob.ep, prob.e_local, prob.dev = 2, 2, torch.device("cpu")
    prob.views = [type("Views", (), {"max_tiles_per_expert": 8})()]
    own_first, expert_major = (prob.plans(128, c.own_rows_first)[0][0].mtiles[:, [0, 3]].tolist() for c in configs)
    assert own_first == [[0, 0], [1, 0], [1, 1], [0, 1], [0, 2], [1, 2]]
    assert expert_major == sorted(own_first)


def _bench_ms_both_modes(rank: int, ws: int) -> dict:
    import time

    bench = load_script("benchmarks/bench_layer.py")
    env = bench.Env(rank=rank, ws=ws, local_rank=rank, cpu=True, dev=torch.device("cpu"), dtype=None, args=None)
    calls = []
    pause_s = 0.002 * (1 + 2 * rank)  # rank 1 is the slower one: 6 ms per call against 2

    def call():
        calls.append(1)
        time.sleep(pause_s)

    out = {"isolated": bench.bench_ms(call, env, iters=4, warmup=2)}
    out["isolated_calls"] = len(calls)
    out["back_to_back"] = bench.bench_ms(call, env, iters=5, warmup=1, back_to_back=True)
    out["back_to_back_calls"] = len(calls) - out["isolated_calls"]
    return out


def test_bench_ms_times_calls_one_at_a_time_or_back_to_back_and_takes_the_slowest_rank(bench):
    from tests.multirank import run_ranks

    assert bench.parse_args(["--back-to-back"]).back_to_back and not bench.parse_args([]).back_to_back
    for rank, r in enumerate(run_ranks(2, _bench_ms_both_modes, timeout=120)):
        assert (r["isolated_calls"], r["back_to_back_calls"]) == (6, 6), (rank, r)  # warm-up + timed, each once
        for mode in ("isolated", "back_to_back"):  # per call, the slower rank's 6 ms, on every rank
            assert 5.9 <= r[mode] <= 9.0, (rank, mode, r)
