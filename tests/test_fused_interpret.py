"""The fused kernels' logic on CPU under ``TRITON_INTERPRET=1``, with simulated ranks in one process.

Index bookkeeping, push destinations, flags and epochs, the combine's owner/slot mapping, parity double
buffering (two calls in a row) and the top-k reduce are checked against an fp32 reference computed from
the same bf16 inputs. Tolerance: the interpreter converts fp32 to bf16 by truncation (1 ulp, up to 0.8%
per rounding, three roundings per row) where GPUs round to nearest; wrong indexing gives O(1) errors,
and unwritten rows stay NaN (outputs are poisoned). Bit-level numerics are checked on the GPU.
"""

from __future__ import annotations

import json

import pytest

from tests.interpreter import run_interpreted

TOL = 4e-2

CASES = {
    "ep2_top2": dict(ws=2, experts=4, topk=2, tokens=12, hidden=48, ffn=24),
    "ep4_top2": dict(ws=4, experts=8, topk=2, tokens=10, hidden=40, ffn=24),
    "ep2_top1_skewed_one_rank_empty": dict(
        ws=2, experts=4, topk=1, tokens=20, hidden=48, ffn=16, skew="one_hot_expert"
    ),
    "ep2_top3_gelu_starved_expert_odd_hidden": dict(
        ws=2, experts=6, topk=3, tokens=9, hidden=33, ffn=20, gated=False, activation="gelu", skew="starve"
    ),
    "ep1": dict(ws=1, experts=3, topk=2, tokens=7, hidden=32, ffn=16),
    "ep2_workspace_wider_than_layer": dict(ws=2, experts=4, topk=2, tokens=12, hidden=40, ffn=16, hidden_capacity=64),
    "ep2_multi_tile_experts": dict(ws=2, experts=2, topk=2, tokens=40, hidden=32, ffn=16),
    # push steps wider than the hidden size and than most units' rows (the defaults move 16 rows x 1024 columns)
    "ep2_wide_push_steps": dict(
        ws=2,
        experts=4,
        topk=2,
        tokens=40,
        hidden=40,
        ffn=16,
        config_overrides={"comm_rows": 16, "comm_block_h": 64},
    ),
    # fc2 ⊕ combine's epilogue in one piece (KernelConfig.epilogue_split; the tests' config splits it in two)
    "ep2_whole_epilogue": dict(
        ws=2, experts=4, topk=2, tokens=40, hidden=48, ffn=24, config_overrides={"epilogue_split": 1}
    ),
    # fc2 ⊕ combine's tile loop apart from its K loop (KernelConfig.fc2_flatten off; the default fuses them), several
    # tiles per program
    "ep2_fc2_tile_loop_apart": dict(
        ws=2, experts=2, topk=2, tokens=40, hidden=48, ffn=24, config_overrides={"fc2_flatten": False}
    ),
    # M-tiles expert-major (KernelConfig.own_rows_first off): tiles needing remote rows interleave with local ones
    "ep2_expert_major_tiles": dict(
        ws=2, experts=4, topk=2, tokens=40, hidden=32, ffn=16, config_overrides={"own_rows_first": False}
    ),
}


def _interpret(arg: str, **env_overrides: str):
    return run_interpreted("tests.fused_simulation", arg, **env_overrides)


@pytest.mark.parametrize("case", list(CASES))
def test_fused_kernels_match_reference(case):
    report = _interpret(json.dumps(CASES[case]))
    assert len(report) == 2 * CASES[case]["ws"]  # two calls, every rank
    for entry in report:
        assert entry["finite"] and entry["act_finite"], entry  # every output row was written
        assert entry["error_flag"] == 0, entry
        assert entry["queues_after"] == [0, 0, 0], entry  # ready for the next launch without a host fill
        assert entry["rel_err"] < TOL, entry
    if case == "ep2_top1_skewed_one_rank_empty":
        assert min(e["recv_rows"] for e in report) == 0  # one rank's experts got nothing


def test_device_plan_equals_the_host_specification():
    """The plan kernel's tables equal build_plan's entry for entry on random counts (EP 1-8, empty ranks and
    experts, tile heights 16-128); a source rank with more tokens than this one overflows the M-tile capacity,
    which is detected and rebuilt."""
    report = _interpret("plan_equivalence")
    assert report["checked"] >= 100 and report["failures"] == [], report
    assert report["verdicts"] >= 2 * report["checked"], report  # the early-launch verdict under limits
    assert report["overflow_detected"] and report["rebuilt_matches"] == [], report
    assert report["units_overflow_detected"] and report["units_rebuilt_matches"] == [], report


def test_guarded_early_launch_is_a_noop_or_exact():
    """An early layer0 launch with too few rows guessed does nothing on any rank; the others' guarded launches and
    the host's relaunch give exactly the unguarded results (two simulated ranks)."""
    report = _interpret("guarded_launch")
    assert report["verdicts"] == [0, 1], report
    assert report["noop_untouched"] and report["equal"] and report["finite"], report
    assert report["queues_after"] == [[0, 0, 0], [0, 0, 0]], report


def test_debug_spin_wait_gives_up_instead_of_hanging():
    assert _interpret("debug_spin") == {"error_flag": 1}


@pytest.mark.parametrize(
    "fused_backward,host_plan,early",
    [("0", "0", "1"), ("1", "0", "1"), ("1", "1", "1"), ("1", "0", "0"), ("1", "0", "small")],
)
def test_fused_backend_glue_ep1_matches_reference_backend(fused_backward, host_plan, early):
    """FusedBackend dispatch -> experts -> autograd backward on one rank (CPU workspace) vs ReferenceBackend,
    with the PyTorch backward and with the fused backward kernels (COMET_FUSED_BACKWARD=1); tables from the plan
    kernel, and from the host (COMET_HOST_PLAN=1); layer0 launched early from the dispatch (COMET_EARLY_LAUNCH=1),
    from the experts' forward (0), and early with too few rows guessed (a no-op launch, then the normal one)."""
    errors = _interpret(
        "backend_glue_ep1", COMET_FUSED_BACKWARD=fused_backward, COMET_HOST_PLAN=host_plan, COMET_EARLY_LAUNCH=early
    )
    # the early launch runs only with the device plan and a large enough guess
    assert errors["early_launch_used"] == (early == "1" and host_plan == "0"), errors
    assert errors["output"] < TOL, errors
    for grad in ("input_grad", "probs_grad", "fc1_grad", "fc2_grad"):
        # the backward starts from the kernel's saved fc1 output, which the interpreter rounds to bf16 by
        # truncation (1 ulp); the reference rounds to nearest — ~0.5-1% apart, wrong indexing is O(1)
        assert errors[grad] < 2.5e-2, errors
    # COMET_DEFER_GC: collection off from the counts read until the first kernel is queued, then on again (an early
    # launch queues it inside the dispatch)
    early_used = errors["early_launch_used"]
    assert errors["gc_enabled_after_dispatch_and_after_forward"] == [early_used, True], errors
    if fused_backward == "1":  # the fc1 output [R, 2F] and the dispatched rows [R, H] are freed as soon as used
        rows = 24 * 2
        assert errors["saved_freed_by_backward"] == [[rows, 40], [rows, 2 * 24]], errors
        assert "retain_graph" in errors["second_backward"], errors
    else:
        assert errors["saved_freed_by_backward"] == [] and errors["second_backward"] == "ran", errors


BACKWARD_CASES = {
    "ep2_top2": dict(ws=2, experts=4, topk=2, tokens=12, hidden=48, ffn=24),
    "ep4_top2": dict(ws=4, experts=8, topk=2, tokens=10, hidden=40, ffn=24),
    "ep2_top3_gelu_odd_hidden": dict(
        ws=2, experts=6, topk=3, tokens=9, hidden=33, ffn=20, gated=False, activation="gelu"
    ),
    "ep2_top1_multi_tile": dict(ws=2, experts=2, topk=1, tokens=40, hidden=32, ffn=16),
    "ep2_expert_major_tiles": dict(
        ws=2, experts=4, topk=2, tokens=40, hidden=32, ffn=16, config_overrides={"own_rows_first": False}
    ),
    # The tests' config, like the defaults, stores dA and finishes with the elementwise activation backward, in
    # two column slices; these run the activation backward inside the data-gradient epilogue
    # (KernelConfig.dgrad_fused_activation), whole and split. ffn 40 leaves the last 32-wide data-gradient tile
    # with a first 16-column slice partly and a second one entirely out of range.
    "ep2_fused_activation_backward": dict(
        ws=2,
        experts=4,
        topk=2,
        tokens=30,
        hidden=48,
        ffn=40,
        config_overrides={"dgrad_fused_activation": True, "epilogue_split": 1},
    ),
    "ep2_fused_activation_backward_split": dict(
        ws=2, experts=4, topk=2, tokens=30, hidden=48, ffn=40, config_overrides={"dgrad_fused_activation": True}
    ),
    "ep2_top3_gelu_fused_activation_backward": dict(
        ws=2,
        experts=6,
        topk=3,
        tokens=9,
        hidden=33,
        ffn=20,
        gated=False,
        activation="gelu",
        config_overrides={"dgrad_fused_activation": True},
    ),
}


@pytest.mark.parametrize("case", list(BACKWARD_CASES))
def test_fused_backward_kernels_match_fp32_autograd(case):
    """grad_out dispatch ⊕ fc2-dgrad ⊕ activation backward, then fc1-dgrad ⊕ combine, on simulated ranks."""
    report = _interpret("backward:" + json.dumps(BACKWARD_CASES[case]))
    assert report["finite"] and report["error_flag"] == 0, report
    assert all(q == [0, 0, 0] for q in report["queues_after"]), report
    # each dispatch kernel got its own push-program count (TEST_CONFIG: 2 forward, 3 backward)
    assert report["push_programs"] == {"dispatch_fc1_kernel": [2], "dispatch_dgrad_kernel": [3]}, report
    # probability gradients pushed by the fc1 data-gradient kernel to the owners' slots: every slot written, exactly
    assert report["pushed_probs_equal"], report
    for grad in ("input_grad", "probs_grad", "fc1_grad", "fc2_grad"):
        assert report[grad] < TOL, report
    fused_epilogue = BACKWARD_CASES[case].get("config_overrides", {}).get("dgrad_fused_activation", False)
    # the fc2 weight gradient's operand, stored by the elementwise pass: the forward's fc2 input bit for bit
    assert report["fc2_input_vs_forward"] == (None if fused_epilogue else 0.0), report


def test_deferred_weight_gradients_sum_the_same_bits():
    """Three fused MoE calls in a chain, two micro-batches into an fp32 ``main_grad``: deferring the weight gradients
    by 1, 2 or 5 layers (COMET_WGRAD_DEFER), or by 2 carried into the next forward (COMET_WGRAD_CARRY), adds exactly
    what computing them in their own layer adds, every weight is marked as summed into ``main_grad``, and nothing is
    left queued when a backward returns unless carried."""
    report = _interpret("deferred_wgrad_glue_ep1")
    assert report["same_bits_as_first_depth"] == {"0": True, "1": True, "2": True, "5": True, "2c": True}, report
    assert all(all(marks) for marks in report["marked"].values()), report
    assert report["main_grad_norm"]["0"] > 0, report
    assert all(report["queued_after_backward"][d] == [0, 0] for d in ("0", "1", "2", "5")), report
    # carried into the next forward (COMET_WGRAD_CARRY): two layers left queued each time, drained at the end
    assert report["queued_after_backward"]["2c"] == [2, 2], report


def test_fused_layer_under_a_reentrant_activation_checkpoint():
    """--recompute-modules moe: the checkpoint's first forward runs under no_grad, so the early layer0 launch keeps
    no fc1 output; the layer must not ask for one (grad mode decides, not the weights' requires_grad), and the
    recomputed forward + backward equal the plain run bit for bit (session 18 found this broken since session 15)."""
    report = _interpret("recompute_glue_ep1")
    assert report["same_bits"] and report["no_grad_forward_equal"], report
    assert report["early_launches"] == [True] * 4, report  # plain, checkpoint's no_grad + recomputed, no_grad
