"""The tuner's choices: default grid split from the dispatch/GEMM ratio, versioned on-disk cache."""

from __future__ import annotations

import dataclasses
import json
import math
import re

import pytest

from comet_megatron import tuning
from comet_megatron.tuning import KernelConfig, ShapeKey, choose_config, default_config, tune

MIXTRAL = ShapeKey(8192, 4096, 14336, 8, 2, 2, "NVIDIA H200", 132)
QWEN = ShapeKey(8192, 2048, 1408, 60, 4, 2, "NVIDIA H200", 132)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COMET_TUNING_CACHE", str(tmp_path / "tuning.json"))


def test_default_split_follows_the_dispatch_share():
    # measured on 2xH200: Mixtral best with 16 push programs, Qwen1.5-MoE with ~32 (coarse steps)
    assert (default_config(MIXTRAL).comm_programs, default_config(MIXTRAL).dgrad_comm_programs) == (16, 16)
    assert 32 <= default_config(QWEN).comm_programs <= 44
    tiny_gpu = dataclasses.replace(QWEN, num_sms=24)
    assert default_config(tiny_gpu).comm_programs == 24 // 3  # the cap wins over the floor on small GPUs
    # at EP=1 nothing leaves the rank, but every row is still gathered into the expert-major buffer: Mixtral's long
    # GEMM hides that with the floor's 16 programs; Qwen3-30B-A3B's short one needs more (session 16: 48 programs
    # took its fc1 kernel 0.79 -> 0.56 ms, its fc2 data-gradient kernel 0.71 -> 0.36)
    assert default_config(dataclasses.replace(MIXTRAL, ep=1)).comm_programs == 16
    qwen3_ep1 = default_config(ShapeKey(4096, 2048, 768, 128, 8, 1, "NVIDIA H200", 132))
    assert 24 <= qwen3_ep1.comm_programs < qwen3_ep1.dgrad_comm_programs == 132 // 3
    # the data-gradient GEMM has half a gated fc1's FLOPs for the same rows: never fewer push programs
    for key in (MIXTRAL, QWEN, tiny_gpu, dataclasses.replace(QWEN, ep=1)):
        assert default_config(key).dgrad_comm_programs >= default_config(key).comm_programs


def test_default_tiles_are_the_same_for_every_shape():
    # bench_gemm_core.py (session 24, H100 and H200): fc2 ⊕ combine 256 wide with its tile loop flattened into its K
    # loop, and the fc2 data-gradient 256 wide, on every shape, long K or short, small ffn or large
    phi = dataclasses.replace(MIXTRAL, ffn=6400, num_experts=16)
    qwen3 = ShapeKey(4096, 2048, 768, 128, 8, 2, "NVIDIA H200", 132)
    for key in (MIXTRAL, QWEN, phi, qwen3):
        config = default_config(key)
        assert config.epilogue_split == 2 and not config.dgrad_fused_activation
        assert (config.fc2_block_n, config.fc2_flatten, config.dgrad_block_n) == (256, True, 256)


def test_default_m_tile_order_is_expert_major_only_for_few_tiles_per_expert():
    # session 22 (H200, both dispatch kernels with the peer emulated): expert-major won 6-10% on DSv3-like (2 M-tiles
    # per local expert at EP=2) and 5-7% on Qwen3-30B-A3B (4); from Qwen1.5-MoE (8.5) up it won 0-4%, and Qwen1.5's
    # layer0 lost 2% when the peer started 100 µs late
    dsv3_like = ShapeKey(4096, 7168, 2048, 256, 8, 2, "NVIDIA H200", 132)
    qwen3 = ShapeKey(4096, 2048, 768, 128, 8, 2, "NVIDIA H200", 132)
    qwen2_57b = ShapeKey(8192, 3584, 2560, 64, 8, 2, "NVIDIA H200", 132)
    assert [tuning.expected_mtiles_per_expert(k) for k in (dsv3_like, qwen3, qwen2_57b, MIXTRAL)] == [2, 4, 16, 32]
    assert not default_config(dsv3_like).own_rows_first and not default_config(qwen3).own_rows_first
    assert all(default_config(k).own_rows_first for k in (QWEN, qwen2_57b, MIXTRAL))
    # more tokens per rank fill more tiles per expert; at EP=1 there is one order (no remote rows), kept as it was
    assert default_config(dataclasses.replace(qwen3, tokens=8192)).own_rows_first
    assert default_config(dataclasses.replace(dsv3_like, ep=1)).own_rows_first
    # the tuner still times the other order
    assert tuning.candidate_configs(default_config(dsv3_like), 132)[-2].own_rows_first


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"epilogue_split": 3}, "epilogue_split=3 must be 1 or 2"),
        ({"fc2_block_n": 96}, "fc2_block_n=96 must be powers of two"),
        ({"dgrad_block_n": 512}, "dgrad_block_n=512 must be at most 256"),
        ({"block_k": 8}, "block_k=8 must be at least 16"),
        ({"num_warps": 6}, "num_warps=6 4, 8 or 16"),
        ({"num_stages": 3.0}, "num_stages=3.0: wrong type"),
        ({"dgrad_fused_activation": "false"}, "dgrad_fused_activation='false': wrong type"),
        ({"programs_per_sm": 3}, "programs_per_sm=3 must be 1 or 2"),
        ({"programs_per_sm": 2}, "programs_per_sm=2 needs num_warps=4"),
    ],
)
def test_bad_kernel_configs_are_refused_with_the_field_named(fields, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        KernelConfig(**fields)


def test_persistent_grid_is_programs_per_sm_times_the_sms():
    assert KernelConfig().persistent_grid(132) == 132
    assert KernelConfig(programs_per_sm=2, num_warps=4).persistent_grid(114) == 228


def test_default_split_never_takes_more_than_a_third_of_a_large_grid():
    heavy_comm = ShapeKey(8192, 7168, 64, 8, 8, 8, "gpu", 132)
    assert default_config(heavy_comm).comm_programs == 132 // 3


def test_tune_caches_the_fastest_and_choose_reads_it(tmp_path):
    candidates = [KernelConfig(comm_programs=c) for c in (8, 16, 24)]
    timings = {8: 3.0, 16: 1.5, 24: math.inf}  # a failing candidate reports inf
    best, best_ms, results = tune(MIXTRAL, lambda cfg: timings[cfg.comm_programs], candidates)
    assert best.comm_programs == 16 and best_ms == 1.5 and len(results) == 3
    assert choose_config(MIXTRAL) == best
    assert choose_config(QWEN) == default_config(QWEN)  # other shapes keep their default
    cache = json.loads((tmp_path / "tuning.json").read_text())
    assert list(cache) == [MIXTRAL.as_str()] and MIXTRAL.as_str().startswith(f"v{tuning.CACHE_VERSION}|")


def test_cache_entries_of_another_version_or_gpu_are_not_used(tmp_path):
    stale = MIXTRAL.as_str().replace(f"v{tuning.CACHE_VERSION}|", "v0|")
    other_gpu = dataclasses.replace(MIXTRAL, device="NVIDIA H100").as_str()
    entry = dataclasses.asdict(KernelConfig(comm_programs=99))
    (tmp_path / "tuning.json").write_text(json.dumps({stale: entry, other_gpu: entry}))
    assert choose_config(MIXTRAL) == default_config(MIXTRAL)


def test_unreadable_cache_falls_back_to_defaults(tmp_path):
    (tmp_path / "tuning.json").write_text("{not json")
    assert choose_config(MIXTRAL) == default_config(MIXTRAL)


def test_choose_reads_the_cache_file_once_per_key(tmp_path, monkeypatch):
    # choose_config runs on every layer call while the GPU waits: no file read after the first
    assert choose_config(MIXTRAL) == default_config(MIXTRAL)
    (tmp_path / "tuning.json").write_text(json.dumps({MIXTRAL.as_str(): {"comm_programs": 99}}))
    monkeypatch.setattr(tuning, "_load", lambda: pytest.fail("the cache file was read again"))
    assert choose_config(MIXTRAL) == default_config(MIXTRAL)


def test_candidates_scale_the_current_push_counts():
    qwen = default_config(QWEN)  # EP=2: 41 / 44 push programs
    candidates = tuning.candidate_configs(qwen, 132)
    assert len(candidates) == tuning.CANDIDATE_COUNT and candidates[0] == qwen
    combos = {(c.comm_programs, c.dgrad_comm_programs, c.fc1_block_n, c.num_stages) for c in candidates[1:-2]}
    assert combos == {(*p, *t) for p in ((20, 22), (41, 44), (62, 66)) for t in tuning.FC1_TILE_CHOICES}
    # then the current choice with its M-tiles in the other order, last with 2-byte peer stores
    assert candidates[-2] == dataclasses.replace(qwen, own_rows_first=False) and qwen.own_rows_first
    assert all(c.own_rows_first for c in candidates[:-2] + candidates[-1:])
    assert candidates[-1] == dataclasses.replace(qwen, aligned_peer_stores=False) and qwen.aligned_peer_stores
    assert all(c.aligned_peer_stores for c in candidates[:-1])
    # everything the tuner does not vary stays as the current choice has it
    assert all(c.fc2_block_n == qwen.fc2_block_n and c.fc2_flatten == qwen.fc2_flatten for c in candidates)
    # clamped: at least 4 programs push, at most half of the grid
    few = tuning.candidate_configs(KernelConfig(comm_programs=5, dgrad_comm_programs=60), 100)
    assert {c.comm_programs for c in few} == {4, 5, 8}  # 5 x 0.5 -> 4, 5 x 1.5 -> 8
    assert max(c.dgrad_comm_programs for c in few[1:-2]) == 50
    # another current choice, other candidates: they follow a cached configuration too
    assert tuning.candidate_configs(default_config(MIXTRAL), 132)[1:] != candidates[1:]
    # a cached expert-major choice: its other order is the default one
    flipped = tuning.candidate_configs(dataclasses.replace(qwen, own_rows_first=False), 132)
    assert flipped[-2] == qwen and not any(c.own_rows_first for c in flipped[:-2] + flipped[-1:])

    # a GPU of fewer than 8 SMs: half of its grid caps the count, never below one program
    assert {c.comm_programs for c in tuning.candidate_configs(KernelConfig(), 6)[1:-2]} == {3}
    assert {c.comm_programs for c in tuning.candidate_configs(KernelConfig(), 1)[1:-2]} == {1}


def test_tune_without_candidates_times_those_of_the_current_choice(tmp_path):
    timed = []
    best, _, results = tune(MIXTRAL, lambda cfg: timed.append(cfg) or float(len(timed)))
    assert timed == tuning.candidate_configs(default_config(MIXTRAL), MIXTRAL.num_sms)
    assert best == timed[0] and len(results) == tuning.CANDIDATE_COUNT
    # the next tuning starts from the stored choice, not from the default
    stored = KernelConfig(comm_programs=40, dgrad_comm_programs=40)
    tuning.store_config(MIXTRAL, stored)
    timed.clear()
    tune(MIXTRAL, lambda cfg: timed.append(cfg) or 1.0)
    assert timed[0] == stored and {c.comm_programs for c in timed} == {20, 40, 60}
