"""Simulated ranks for the fused kernels under ``TRITON_INTERPRET=1`` (one process, CPU tensors).

Each rank's symmetric buffers are ordinary CPU tensors; the peer tables hold their addresses, so a
kernel "on rank r" writes into another rank's buffers exactly as it would over NVLink. The interpreter
runs programs one after another, so layer0 runs in two passes over all ranks (communication programs
first, MODE=1, then GEMM programs, MODE=2); layer1 and the reduce run rank after rank.
Run as ``python -m tests.fused_simulation`` with ``TRITON_INTERPRET=1`` (the test does this).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import gc
import json
import os
import sys

import torch
import torch.nn.functional as F

from comet_megatron.buffer import CometBuffer
from comet_megatron.fused_ops import (
    RankViews,
    combine_reduce,
    dispatch_dgrad,
    dispatch_fc1,
    fc2_combine,
    single_process_views,
)
from comet_megatron.fused_plan import HostPlan, build_plan, check_device_plan, device_plan, table_capacities
from comet_megatron.routing import build_local_routing
from comet_megatron.tuning import KernelConfig
from tests.multirank import _free_port

TEST_CONFIG = KernelConfig(
    comm_programs=2,
    dgrad_comm_programs=3,  # unlike comm_programs: the backward's dispatch must use its own split
    block_m=16,
    fc1_block_n=16,
    fc2_block_n=16,
    dgrad_block_n=32,  # unlike fc1_block_n: the backward GEMM must use its own tile width
    epilogue_split=2,  # as the defaults: 8- and 16-column epilogue slices
    dgrad_fused_activation=False,
    block_k=16,
    num_warps=4,
    num_stages=1,
    comm_rows=4,
    comm_block_h=32,
)


def random_routing(gen, tokens, experts, topk, skew=None):
    """``(routing_map, probs)``: softmax top-k of random logits; ``skew``: None, "one_hot_expert" or "starve"."""
    logits = torch.randn(tokens, experts, generator=gen)
    if skew == "one_hot_expert":
        logits[:, 1] += 20.0  # most rows go to expert 1
    elif skew == "starve":
        logits[:, 0] -= 20.0  # expert 0 receives nothing
    probs_full = torch.softmax(logits, dim=-1)
    top_p, top_i = torch.topk(probs_full, topk, dim=-1)
    routing_map = torch.zeros(tokens, experts, dtype=torch.bool).scatter_(1, top_i, True)
    probs = torch.zeros(tokens, experts).scatter_(1, top_i, top_p)
    return routing_map, probs


def _reference(x, routing, w1_all, w2_all, gated, activation):
    """fp32 math on the bf16 inputs: out[t] = sum_k fc2(act(fc1(x_t)) * p)."""
    act_fn = F.silu if activation == "silu" else F.gelu
    out = torch.zeros(x.shape[0], w2_all.shape[1])
    for slot in range(routing.num_slots):
        t = int(routing.token_of_slot[slot])
        g = int(routing.expert_of_slot[slot])
        h = x[t].float() @ w1_all[g].float().t()
        if gated:
            gate, lin = h.chunk(2)
            a = act_fn(gate.bfloat16().float()) * lin.bfloat16().float()
        else:
            a = act_fn(h.bfloat16().float())
        a = (a * routing.probs_of_slot[slot]).bfloat16().float()
        out[t] += a @ w2_all[g].float().t()
    return out


def simulated_workspaces(ws, tokens, hidden, e_local, topk) -> list[RankViews]:
    """Every simulated rank's workspace (CPU tensors, NaN-poisoned) with peer tables of their addresses,
    sized as CometBuffer sizes them for ``tokens`` per rank (a ``hidden`` wider than a layer's is fine)."""
    return single_process_views(
        ws,
        recv_capacity=ws * tokens * min(topk, e_local),
        slot_capacity=tokens * topk,
        hidden=hidden,
        num_local_experts=e_local,
        max_tiles_per_expert=-(-ws * tokens // TEST_CONFIG.block_m),
    )


def device_tables_checked(counts, plan, block_m: int, tokens: int, topk: int, own_rows_first: bool = True) -> dict:
    """The plan kernel's tables for ``plan``'s rank (what the layer uses), after checking them against the host
    specification entry for entry (``build_plan``'s ``plan``, built with the same ``own_rows_first``)."""
    tables = device_plan(
        counts, plan.ep_rank, plan.num_local_experts, block_m, tokens, topk, own_rows_first=own_rows_first
    )
    mismatch = plan_mismatches(tables, plan)
    assert not mismatch, f"device plan != build_plan for rank {plan.ep_rank}: {mismatch}"
    return tables


def checked_plans(counts, ws: int, e_local: int, cfg: KernelConfig, max_t: int, tokens: int, topk: int):
    """Every simulated rank's host plan and the plan kernel's tables for it (checked against it), in ``cfg``'s
    M-tile order: ``(plans, tables)``."""
    order = dict(own_rows_first=cfg.own_rows_first)
    plans = [build_plan(counts, r, e_local, cfg.block_m, max_t, **order) for r in range(ws)]
    return plans, [device_tables_checked(counts, p, cfg.block_m, tokens, topk, **order) for p in plans]


def plan_mismatches(tables: dict, plan) -> list[str]:
    """Names of the tables where the device plan differs from the host plan (only the used rows compared)."""
    n_units, n_mtiles, _verdict = (int(v) for v in tables["sizes"].tolist())
    used = {"units": tables["units"][:n_units], "mtiles": tables["mtiles"][:n_mtiles]}
    bad = []
    if (n_units, n_mtiles) != (plan.units.shape[0], plan.mtiles.shape[0]):
        bad.append(f"sizes {(n_units, n_mtiles)} vs {(plan.units.shape[0], plan.mtiles.shape[0])}")
    for name in ("units", "mtiles", "src_table", "src_first_slot", "tokens_per_expert"):
        got = used.get(name, tables[name]).long().cpu()
        want = getattr(plan, name).long()
        if got.shape != want.shape or not torch.equal(got, want):
            bad.append(name)
    return bad


def plan_equivalence(cases: int = 60, seed: int = 0, device: str = "cpu") -> dict:
    """The plan kernel (on ``device``: interpreted on the CPU, compiled on a GPU) against ``build_plan`` on random
    counts matrices (empty ranks, empty and crowded experts, several EP sizes and tile heights), and a source rank
    with more tokens than this one (capacity rebuild)."""
    gen = torch.Generator().manual_seed(seed)
    checked, verdicts, failures = 0, 0, []
    for case in range(cases):
        ep = [1, 2, 3, 4, 8][case % 5]
        e_local = [1, 2, 3, 5][(case // 5) % 4]
        block_m = [16, 64, 128][case % 3]
        topk = min(ep * e_local, [1, 2, 4][(case // 3) % 3])
        tokens = int(torch.randint(1, 300, (1,), generator=gen))
        counts = torch.zeros(ep, ep * e_local, dtype=torch.int64)
        for src in range(ep):  # every token to topk distinct experts
            for _ in range(tokens):
                counts[src, torch.randperm(ep * e_local, generator=gen)[:topk]] += 1
        if case % 4 == 1:
            counts[-1] = 0  # a rank sends nothing
        if case % 6 == 2:
            counts[:, :e_local] = 0  # rank 0's experts get nothing
        own_first = (case // 2) % 2 == 0  # both M-tile orders (KernelConfig.own_rows_first)
        for me in range(ep):
            plan = build_plan(counts, me, e_local, block_m, 10**6, own_rows_first=own_first)
            tables = device_plan(counts.to(device), me, e_local, block_m, tokens, topk, own_rows_first=own_first)
            if bad := plan_mismatches(tables, plan):
                failures.append({"case": case, "ep": ep, "e_local": e_local, "block_m": block_m, "me": me, "bad": bad})
            checked += 1
            # the early-launch verdict: tables within capacity, rows, tokens and M-tiles within their limits
            units_cap, mtiles_cap = table_capacities(tokens, topk, ep, e_local, block_m)
            fit = plan.units.shape[0] <= units_cap and plan.mtiles.shape[0] <= mtiles_cap
            most = int(counts.sum(1).max()) // topk
            if int(tables["sizes"][2]) != int(fit):  # no limits: the tables' capacities alone
                failures.append({"case": case, "me": me, "limits": None, "verdict": fit})
            verdicts += 1
            most_tiles = int((-(-counts.sum(0) // block_m)).max())
            limit_cases = [(plan.recv_rows, most, most_tiles)]
            if case % 3 == 0:  # one below each limit (the interpreter's time): a verdict of 0
                limit_cases += [
                    (plan.recv_rows - 1, most, most_tiles),
                    (plan.recv_rows, most - 1, most_tiles),
                    (plan.recv_rows, most, most_tiles - 1),
                ]
            for rows_limit, tokens_limit, tiles_limit in limit_cases:
                limited = device_plan(
                    counts.to(device),
                    me,
                    e_local,
                    block_m,
                    tokens,
                    topk,
                    rows_limit=rows_limit,
                    tokens_limit=tokens_limit,
                    tiles_limit=tiles_limit,
                )
                want = fit and plan.recv_rows <= rows_limit and most <= tokens_limit and most_tiles <= tiles_limit
                verdicts += 1
                if int(limited["sizes"][2]) != int(want):
                    failures.append({"case": case, "me": me, "limits": [rows_limit, tokens_limit, tiles_limit]})
    report = {"checked": checked, "failures": failures, "verdicts": verdicts}
    # rank 0 holds 3 tokens, rank 1 holds 200, all to rank 0's expert: the M-tile capacity rank 0 guessed from its
    # own tokens is too small; the kernel writes only what fits and check_device_plan rebuilds
    mtiles_case = torch.tensor([[3, 0], [200, 0]])
    report["overflow_detected"], report["rebuilt_matches"] = _capacity_overflow_rebuilt(mtiles_case, "mtiles", device)
    # rank 0 says it holds 3 tokens but sends 300 rows (more than tokens * topk): the units capacity is too small
    units_case = torch.tensor([[150, 150], [0, 0]])
    report["units_overflow_detected"], report["units_rebuilt_matches"] = _capacity_overflow_rebuilt(
        units_case, "units", device
    )
    return report


def _capacity_overflow_rebuilt(counts, table: str, device: str) -> tuple[bool, list[str]]:
    """Rank 0 of ``counts`` (one expert per rank, 16-row tiles) planned for 3 tokens of top-1: whether its ``table``
    overflowed the capacity, and where the tables check_device_plan rebuilt differ from build_plan's."""
    small = device_plan(counts.to(device), 0, 1, 16, 3, 1)
    overflowed = int(small["sizes"][0 if table == "units" else 1]) > small[table].shape[0]
    overflowed &= int(small["sizes"][2]) == 0  # and no early launch may run on these tables
    rebuilt = check_device_plan(small, HostPlan(counts, 0, 1, 1), counts.to(device), 16, 3, 10**6)
    return overflowed, plan_mismatches(rebuilt, build_plan(counts, 0, 1, 16, 10**6))


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bits (NaN poison compares equal to itself)."""
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def guarded_launch(ws=2, experts=4, topk=2, tokens=12, hidden=32, ffn=16, seed=3) -> dict:
    """The early (guarded) layer0 launch on simulated ranks: rank 0 guesses one row too few (verdict 0), the others
    exactly. Rank 0's guarded launch must change nothing anywhere (peers' receive rows, probs and flags, its own
    queues and outputs); every rank's guarded launch with a verdict of 1, plus rank 0's unguarded relaunch, must
    produce exactly what unguarded launches produce."""
    gen = torch.Generator().manual_seed(seed)
    e_local = experts // ws
    cfg = TEST_CONFIG
    w1_all = (torch.randn(experts, 2 * ffn, hidden, generator=gen) * 0.1).bfloat16()
    xs, routings = [], []
    for _ in range(ws):
        xs.append(torch.randn(tokens, hidden, generator=gen).bfloat16())
        routing_map, probs = random_routing(gen, tokens, experts, topk)
        routings.append(build_local_routing(routing_map, probs, topk))
    counts = torch.stack([r.tokens_per_expert for r in routings])

    def run(guarded: bool) -> tuple[list, list, list]:
        views = simulated_workspaces(ws, tokens, hidden, e_local, topk)
        plans = [build_plan(counts, r, e_local, cfg.block_m, views[0].max_tiles_per_expert) for r in range(ws)]
        guesses = [p.recv_rows - (r == 0) for r, p in enumerate(plans)]
        limits = [
            dict(rows_limit=g, tokens_limit=tokens, tiles_limit=views[0].max_tiles_per_expert) if guarded else {}
            for g in guesses
        ]
        tables = [device_plan(counts, r, e_local, cfg.block_m, tokens, topk, **limits[r]) for r in range(ws)]
        verdicts = [int(t["sizes"][2]) for t in tables]
        rows = [max(g, p.recv_rows) for g, p in zip(guesses, plans)]  # rank 0's outputs: large enough to compare
        acts = [torch.full((n, ffn), float("nan"), dtype=torch.bfloat16) for n in rows]
        untouched = True

        def launch(r, mode, guard):
            dispatch_fc1(
                views[r],
                plans[r],
                tables[r],
                xs[r],
                routings[r].token_of_slot,
                routings[r].probs_of_slot.float(),
                w1_all[r * e_local : (r + 1) * e_local].contiguous(),
                epoch=1,
                ep_rank=r,
                ep=ws,
                gated=True,
                activation="silu",
                config=cfg,
                grid=5,
                mode=mode,
                act_out=acts[r],
                rows=guesses[r] if guard else plans[r].recv_rows,
                guarded=guard,
            )

        if guarded:  # rank 0's no-op, checked before anything else runs
            before = [(v.recv.clone(), v.recv_probs.clone(), v.flags.clone()) for v in views]
            for mode in (1, 2):
                launch(0, mode, True)
            after = [(v.recv, v.recv_probs, v.flags) for v in views]
            untouched = all(
                torch.equal(_bits(a), _bits(b)) for pair in zip(before, after) for a, b in zip(*pair)
            ) and bool(acts[0].isnan().all())
            untouched &= views[0].queues.tolist() == [0, 0, 0]
        for mode in (1, 2):
            for r in range(ws):
                relaunch = guarded and r == 0  # the host saw verdict 0: unguarded, the same epoch
                launch(r, mode, guarded and not relaunch)
        outs = [a[: p.recv_rows] for a, p in zip(acts, plans)]
        return outs, verdicts, [untouched, [v.queues.tolist() for v in views]]

    plain, _, _ = run(False)
    early, verdicts, (untouched, queues) = run(True)
    return {
        "verdicts": verdicts,
        "noop_untouched": untouched,
        "queues_after": queues,
        "equal": all(torch.equal(a, b) for a, b in zip(plain, early)),
        "finite": all(bool(torch.isfinite(a.float()).all()) for a in early),
    }


def simulate(
    ws,
    experts,
    topk,
    tokens,
    hidden,
    ffn,
    gated=True,
    activation="silu",
    skew=None,
    calls=2,
    seed=0,
    hidden_capacity=None,
    config_overrides=None,
):
    gen = torch.Generator().manual_seed(seed)
    e_local = experts // ws
    fc1_out = 2 * ffn if gated else ffn
    cfg = dataclasses.replace(TEST_CONFIG, **(config_overrides or {}))
    w1_all = (torch.randn(experts, fc1_out, hidden, generator=gen) * 0.1).bfloat16()
    w2_all = (torch.randn(experts, hidden, ffn, generator=gen) * 0.1).bfloat16()
    views = simulated_workspaces(ws, tokens, hidden_capacity or hidden, e_local, topk)
    max_t = views[0].max_tiles_per_expert
    report = []
    for call in range(1, calls + 1):
        xs, routings = [], []
        for _ in range(ws):
            xs.append(torch.randn(tokens, hidden, generator=gen).bfloat16())
            routing_map, probs = random_routing(gen, tokens, experts, topk, skew)
            routings.append(build_local_routing(routing_map, probs, topk))
        counts = torch.stack([r.tokens_per_expert for r in routings])
        plans, plan_tables = checked_plans(counts, ws, e_local, cfg, max_t, tokens, topk)
        acts = [None] * ws
        for mode in (1, 2):
            for r in range(ws):
                acts[r] = (
                    torch.full((plans[r].recv_rows, ffn), float("nan"), dtype=torch.bfloat16) if mode == 1 else acts[r]
                )
                dispatch_fc1(
                    views[r],
                    plans[r],
                    plan_tables[r],
                    xs[r],
                    routings[r].token_of_slot,
                    routings[r].probs_of_slot.float(),
                    w1_all[r * e_local : (r + 1) * e_local].contiguous(),
                    epoch=call,
                    ep_rank=r,
                    ep=ws,
                    gated=gated,
                    activation=activation,
                    config=cfg,
                    grid=5,
                    mode=mode,
                    act_out=acts[r],
                )
        for r in range(ws):
            fc2_combine(
                views[r],
                plans[r],
                plan_tables[r],
                acts[r],
                w2_all[r * e_local : (r + 1) * e_local].contiguous(),
                epoch=call,
                ep_rank=r,
                ep=ws,
                config=cfg,
                grid=3,
            )
        for r in range(ws):
            slot_of_token = torch.argsort(routings[r].token_of_slot, stable=True).view(tokens, topk)
            out = combine_reduce(
                views[r],
                slot_of_token,
                e_local,
                hidden,
                epoch=call,
                ep=ws,
                topk=topk,
                block_t=8,
                block_h=32,
                debug=True,
            )
            ref = _reference(xs[r], routings[r], w1_all, w2_all, gated, activation)
            err = ((out.float() - ref).norm() / ref.norm()).item()
            report.append(
                {
                    "call": call,
                    "rank": r,
                    "rel_err": err,
                    "finite": bool(torch.isfinite(out.float()).all()),
                    "act_finite": bool(torch.isfinite(acts[r].float()).all()),
                    "error_flag": int(views[r].error),
                    "queues_after": views[r].queues.tolist(),  # the last program of each launch zeroes them
                    "recv_rows": plans[r].recv_rows,
                    "units": int(plans[r].units.shape[0]),
                }
            )
    return report


@contextlib.contextmanager
def push_programs_recorded():
    """``{kernel name: {N_COMM values}}`` of every launch through ``fused_ops`` inside the block: which push-program
    count each dispatch kernel was given (the counts change no value, so only this shows a forward / backward mixup)."""
    from comet_megatron import fused_ops

    seen: dict[str, set[int]] = {}
    real_launch = fused_ops.launch

    def recording_launch(kernel, grid, *args, **kwargs):
        if "N_COMM" in kwargs:
            seen.setdefault(getattr(kernel, "__name__", str(kernel)), set()).add(kwargs["N_COMM"])
        return real_launch(kernel, grid, *args, **kwargs)

    fused_ops.launch = recording_launch
    try:
        yield seen
    finally:
        fused_ops.launch = real_launch


def simulate_backward(
    ws, experts, topk, tokens, hidden, ffn, gated=True, activation="silu", seed=1, config_overrides=None
):
    """Forward (saving the fc1 output) then the fused backward on every simulated rank, against fp32 autograd
    of the same function on the same bf16 inputs: input, router-probability and expert-weight gradients."""
    gen = torch.Generator().manual_seed(seed)
    e_local = experts // ws
    cfg = dataclasses.replace(TEST_CONFIG, **(config_overrides or {}))
    fc1_out = 2 * ffn if gated else ffn
    act_fn = F.silu if activation == "silu" else F.gelu
    w1_all = (torch.randn(experts, fc1_out, hidden, generator=gen) * 0.1).bfloat16()
    w2_all = (torch.randn(experts, hidden, ffn, generator=gen) * 0.1).bfloat16()
    views = simulated_workspaces(ws, tokens, hidden, e_local, topk)
    max_t = views[0].max_tiles_per_expert
    xs, routings, grads_out = [], [], []
    for _ in range(ws):
        xs.append(torch.randn(tokens, hidden, generator=gen).bfloat16())
        routing_map, probs = random_routing(gen, tokens, experts, topk)
        routings.append(build_local_routing(routing_map, probs, topk))
        grads_out.append(torch.randn(tokens, hidden, generator=gen).bfloat16())
    counts = torch.stack([r.tokens_per_expert for r in routings])
    plans, tables = checked_plans(counts, ws, e_local, cfg, max_t, tokens, topk)
    local = lambda w, r: w[r * e_local : (r + 1) * e_local].contiguous()  # noqa: E731
    common = dict(ep=ws, gated=gated, activation=activation, config=cfg, grid=5)
    # forward (epoch 1): keep what the autograd function keeps
    acts, preacts = [None] * ws, [None] * ws
    for mode in (1, 2):
        for r in range(ws):
            if mode == 1:
                acts[r] = torch.empty(plans[r].recv_rows, ffn, dtype=torch.bfloat16)
                preacts[r] = torch.full((plans[r].recv_rows, fc1_out), float("nan"), dtype=torch.bfloat16)
            dispatch_fc1(
                views[r],
                plans[r],
                tables[r],
                xs[r],
                routings[r].token_of_slot,
                routings[r].probs_of_slot.float(),
                local(w1_all, r),
                epoch=1,
                ep_rank=r,
                mode=mode,
                save_preact=True,
                act_out=acts[r],
                preact_out=preacts[r],
                **common,
            )
    x_e = [views[r].received(plans[r].recv_rows, hidden).clone() for r in range(ws)]
    p_e = [views[r].recv_probs[: plans[r].recv_rows].clone() for r in range(ws)]
    # backward (epoch 2): step 1 on every rank (pushes, then GEMMs), weight grads, step 2, reduce
    d_fc1, d_prob = [None] * ws, [None] * ws
    # the elementwise activation-backward pass also stores the fc2 input (poisoned first); not the fused epilogue
    stores_fc2_input = not cfg.dgrad_fused_activation
    fc2_inputs = [torch.full((plans[r].recv_rows, ffn), float("nan"), dtype=torch.bfloat16) for r in range(ws)]
    for mode in (1, 2):
        for r in range(ws):
            out = dispatch_dgrad(
                views[r],
                plans[r],
                tables[r],
                grads_out[r],
                routings[r].token_of_slot,
                routings[r].probs_of_slot.float(),
                local(w2_all, r),
                preacts[r],
                epoch=2,
                ep_rank=r,
                mode=mode,
                fc2_input=fc2_inputs[r] if stores_fc2_input and mode == 2 else None,
                **common,
            )
            if mode == 2:
                d_fc1[r], d_prob[r] = out
    grad_w1, grad_w2 = torch.zeros(experts, fc1_out, hidden), torch.zeros(experts, hidden, ffn)
    for r in range(ws):
        d_y = views[r].received(plans[r].recv_rows, hidden).float()
        pre = preacts[r].float()
        if stores_fc2_input:  # what the fused backend feeds the fc2 weight gradient
            fc2_in = fc2_inputs[r].float()
        elif gated:
            gate, lin = pre.chunk(2, dim=-1)
            fc2_in = act_fn(gate) * lin * p_e[r][:, None]
        else:
            fc2_in = act_fn(pre) * p_e[r][:, None]
        segments = plans[r].tokens_per_expert.tolist()
        for e, (dy, a, df, xe) in enumerate(
            zip(*(torch.split(t, segments) for t in (d_y, fc2_in, d_fc1[r].float(), x_e[r].float())))
        ):
            grad_w2[r * e_local + e] = dy.t() @ a
            grad_w1[r * e_local + e] = df.t() @ xe
    for r in range(ws):
        fc2_combine(
            views[r],
            plans[r],
            tables[r],
            d_fc1[r],
            local(w1_all, r),
            epoch=2,
            ep_rank=r,
            ep=ws,
            config=cfg,
            grid=3,
            weight_kn=True,
            push_probs=d_prob[r],
        )
    grad_x, grad_p = [], [torch.zeros(routings[r].num_slots) for r in range(ws)]
    for r in range(ws):
        slot_of_token = torch.argsort(routings[r].token_of_slot, stable=True).view(tokens, topk)
        grad_x.append(
            combine_reduce(views[r], slot_of_token, e_local, hidden, epoch=2, ep=ws, topk=topk, block_t=8, block_h=32)
        )
        # d_prob rows back to their owners' slots, by the host from the plan (the kernel pushed them: compared below)
        src, first = plans[r].src_table, plans[r].src_first_slot
        start = 0
        for e, n_rows in enumerate(plans[r].tokens_per_expert.tolist()):
            for s in range(ws):
                offset, count = int(src[e, s, 0]), int(src[e, s, 1])
                slot0 = int(first[e, s])
                grad_p[s][slot0 : slot0 + count] = d_prob[r][start + offset : start + offset + count]
            start += n_rows
    pushed_p = [views[r].combine_probs_slots(2, routings[r].num_slots) for r in range(ws)]
    # fp32 autograd reference of the same function
    w1_ref = w1_all.float().requires_grad_(True)
    w2_ref = w2_all.float().requires_grad_(True)
    ref_x, ref_p = [], []
    for r in range(ws):
        x = xs[r].float().requires_grad_(True)
        probs = routings[r].probs_of_slot.float().clone().requires_grad_(True)
        tok, exp = routings[r].token_of_slot, routings[r].expert_of_slot
        h = torch.einsum("sh,soh->so", x[tok], w1_ref[exp])
        a = (act_fn(h.chunk(2, -1)[0]) * h.chunk(2, -1)[1]) if gated else act_fn(h)
        y = torch.einsum("sf,shf->sh", a * probs[:, None], w2_ref[exp])
        out = torch.zeros(tokens, hidden).index_add(0, tok, y)
        (out * grads_out[r].float()).sum().backward()
        ref_x.append(x.grad)
        ref_p.append(probs.grad)

    def rel(a, b):
        return ((a.float() - b).norm() / b.norm()).item()

    return {
        "input_grad": max(rel(grad_x[r], ref_x[r]) for r in range(ws)),
        "probs_grad": max(rel(pushed_p[r], ref_p[r]) for r in range(ws)),
        # the kernel's pushed probability gradients against the host's scatter of the same d_prob: bit-identical
        "pushed_probs_equal": all(torch.equal(pushed_p[r], grad_p[r]) for r in range(ws)),
        "fc1_grad": rel(grad_w1, w1_ref.grad),
        "fc2_grad": rel(grad_w2, w2_ref.grad),
        "finite": all(bool(torch.isfinite(g.float()).all()) for g in grad_x + d_fc1),
        # the stored fc2 input against the forward's (same formula and rounding: expected bit-identical)
        "fc2_input_vs_forward": (
            max((fc2_inputs[r].float() - acts[r].float()).abs().max().item() for r in range(ws))
            if stores_fc2_input
            else None
        ),
        "error_flag": max(int(v.error) for v in views),
        "queues_after": [v.queues.tolist() for v in views],
    }


def debug_spin_gives_up() -> dict:
    """A reduce waiting for an epoch no rank will publish must give up (debug mode) and flag an error."""
    hidden, tokens, topk = 32, 4, 1
    views = RankViews(
        recv=torch.zeros(1, hidden, dtype=torch.bfloat16),
        recv_probs=torch.zeros(1),
        flags=torch.zeros(2, dtype=torch.int32),
        combine=torch.zeros(2, tokens, hidden, dtype=torch.bfloat16),
        combine_probs=torch.zeros(2, tokens),
        counter=torch.zeros(1, dtype=torch.int32),
        queues=torch.zeros(3, dtype=torch.int32),
        error=torch.zeros(1, dtype=torch.int32),
        recv_table=torch.zeros(1, dtype=torch.int64),
        recv_probs_table=torch.zeros(1, dtype=torch.int64),
        flags_table=torch.zeros(1, dtype=torch.int64),
        combine_table=torch.zeros(1, dtype=torch.int64),
        combine_probs_table=torch.zeros(1, dtype=torch.int64),
        max_tiles_per_expert=1,
    )
    slot_of_token = torch.arange(tokens).view(tokens, topk)
    combine_reduce(
        views, slot_of_token, 1, hidden, epoch=7, ep=1, topk=topk, debug=True, block_t=4, block_h=32, max_spins=50
    )
    return {"error_flag": int(views.error)}


class _CpuWorkspace:
    """Stands in for CometBuffer on CPU (one rank): same views, plain tensors."""

    def __init__(self, tokens, hidden, e_local, topk):
        self.views = simulated_workspaces(1, tokens, hidden, e_local, topk)[0]
        self.epoch = 0
        self.tokens_capacity, self.hidden, self.num_local_experts, self.topk = tokens, hidden, e_local, topk

    fits = CometBuffer.fits  # the same test over the fixed capacity

    def ensure(self, *args):
        return self.views

    def next_epoch(self):
        self.epoch += 1
        return self.epoch


def _keep(kept: list, tensor: torch.Tensor) -> torch.Tensor:
    kept.append(tensor)
    return tensor


def _cpu_fused_backend(group, tokens, hidden, ffn, experts, topk):
    """A FusedBackend over a CPU workspace for one gloo rank, set as ``__init__`` would from the environment."""
    from comet_megatron.backends.base import MoEBackend
    from comet_megatron.backends.fused import FusedBackend
    from comet_megatron.ops.deferred_wgrad import wgrad_carry, wgrad_defer_depth

    fused = FusedBackend.__new__(FusedBackend)
    MoEBackend.__init__(fused, group, experts)
    fused.topk, fused.ffn, fused.num_experts = topk, ffn, experts
    fused.activation_name, fused.gated, fused.num_sms, fused.device_name = "silu", True, 5, "cpu-sim"
    fused.config_override = TEST_CONFIG
    fused.fused_backward = os.environ.get("COMET_FUSED_BACKWARD", "1") != "0"  # what __init__ reads
    fused.defer_gc, fused._gc_deferred = True, False  # COMET_DEFER_GC=1: collection off from counts read to launch
    fused.host_plan = os.environ.get("COMET_HOST_PLAN", "0") != "0"  # what __init__ reads
    fused.wgrad_defer, fused.wgrad_carry = wgrad_defer_depth(), wgrad_carry()  # what __init__ reads
    # COMET_EARLY_LAUNCH: "0" off; "1" the guess of a previous call (exact here); "small": a guess one row short,
    # so the guarded launch is a no-op and the experts' forward launches again with the same epoch
    early_mode = os.environ.get("COMET_EARLY_LAUNCH", "1")
    fused.early_launch = early_mode != "0"
    fused._recent_rows = collections.deque([tokens * topk - (early_mode == "small")], maxlen=8)
    fused._buffer = _CpuWorkspace(tokens, hidden, experts, topk)
    return fused


def deferred_wgrad_glue_ep1(
    depths=("0", "1", "2", "5", "2c"), layers=3, tokens=24, hidden=40, ffn=24, experts=3, topk=2
) -> dict:
    """``layers`` FusedBackend calls in a chain (each its own weights with an fp32 ``main_grad``, its own routing),
    two micro-batches accumulated, for every deferral depth (``"2c"``: depth 2 carried into the next forward, drained
    after the last micro-batch as Megatron's DDP would): the ``main_grad`` sums (bits), what autograd got for the
    weights, and how many layers stayed queued once each backward returned."""
    import torch.distributed as dist

    from comet_megatron.backends.base import ExpertWeights
    from comet_megatron.ops.activation import ExpertActivation
    from comet_megatron.ops.deferred_wgrad import DEFERRED_WEIGHT_GRADS

    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"tcp://127.0.0.1:{_free_port()}")
    fused = _cpu_fused_backend(dist.group.WORLD, tokens, hidden, ffn, experts, topk)
    fused.early_launch = False  # the guess would differ between layers' calls; not what this checks
    gen = torch.Generator().manual_seed(11)
    params = [
        (
            (torch.randn(experts, 2 * ffn, hidden, generator=gen) * 0.1).bfloat16(),
            (torch.randn(experts, hidden, ffn, generator=gen) * 0.1).bfloat16(),
        )
        for _ in range(layers)
    ]
    micro_batches = []
    for _ in range(2):
        x = torch.randn(tokens, hidden, generator=gen).bfloat16()
        routings = [random_routing(gen, tokens, experts, topk) for _ in range(layers)]
        micro_batches.append((x, routings, torch.randn(tokens, hidden, generator=gen).bfloat16()))
    results = {}
    for variant in depths:
        fused.wgrad_defer, fused.wgrad_carry = int(variant.rstrip("c")), variant.endswith("c")
        weights = []
        for w1, w2 in params:
            pair = []
            for w in (w1, w2):
                w = w.clone().requires_grad_(True)
                w.main_grad = torch.zeros(w.shape, dtype=torch.float32)
                w.grad_added_to_main_grad = False
                pair.append(w)
            weights.append(ExpertWeights(*pair, ExpertActivation(F.silu, True), fuse_wgrad_into_main_grad=True))
        queued_after_backward = []
        for x, routings, grad_out in micro_batches:
            y = x.clone().requires_grad_(True)
            for layer, (routing_map, probs) in zip(weights, routings):
                routing = build_local_routing(routing_map, probs, topk)
                dispatched = fused.dispatch(y, routing, routing.tokens_per_expert.unsqueeze(0), weights=layer)
                y = fused.combine(fused.experts(dispatched, layer), dispatched.handle)
            (y.float() * grad_out.float()).sum().backward()
            queued_after_backward.append(len(DEFERRED_WEIGHT_GRADS))
        DEFERRED_WEIGHT_GRADS.drain()
        results[variant] = {
            "main_grad_bits": [_bits(w.main_grad).tolist() for layer in weights for w in (layer.fc1, layer.fc2)],
            "marked": [bool(w.grad_added_to_main_grad) for layer in weights for w in (layer.fc1, layer.fc2)],
            "main_grad_norm": sum(w.main_grad.norm().item() for layer in weights for w in (layer.fc1, layer.fc2)),
            "queued_after_backward": queued_after_backward,
        }
    dist.destroy_process_group()
    want = results[depths[0]]["main_grad_bits"]
    return {
        "same_bits_as_first_depth": {str(d): r["main_grad_bits"] == want for d, r in results.items()},
        "marked": {str(d): r["marked"] for d, r in results.items()},
        "main_grad_norm": {str(d): r["main_grad_norm"] for d, r in results.items()},
        "queued_after_backward": {str(d): r["queued_after_backward"] for d, r in results.items()},
    }


def recompute_glue_ep1(tokens=24, hidden=40, ffn=24, experts=3, topk=2) -> dict:
    """The fused layer under a reentrant activation checkpoint (Megatron's ``--recompute-modules moe``): its first
    forward runs under no_grad (layer0 launched early from the dispatch, keeping no fc1 output), the backward reruns
    it with grad. Output and gradients must equal the plain run's bit for bit; a no_grad forward must run too."""
    import torch.distributed as dist
    import torch.utils.checkpoint

    from comet_megatron.backends.base import ExpertWeights
    from comet_megatron.ops.activation import ExpertActivation

    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"tcp://127.0.0.1:{_free_port()}")
    fused = _cpu_fused_backend(dist.group.WORLD, tokens, hidden, ffn, experts, topk)
    gen = torch.Generator().manual_seed(21)
    w1 = (torch.randn(experts, 2 * ffn, hidden, generator=gen) * 0.1).bfloat16().requires_grad_(True)
    w2 = (torch.randn(experts, hidden, ffn, generator=gen) * 0.1).bfloat16().requires_grad_(True)
    x = torch.randn(tokens, hidden, generator=gen).bfloat16()
    routing_map, probs = random_routing(gen, tokens, experts, topk)
    grad_out = torch.randn(tokens, hidden, generator=gen).bfloat16()
    weights = ExpertWeights(w1, w2, ExpertActivation(F.silu, True))
    early_launches = []

    def layer(inp):
        routing = build_local_routing(routing_map, probs, topk)
        dispatched = fused.dispatch(inp, routing, routing.tokens_per_expert.unsqueeze(0), weights=weights)
        early_launches.append(dispatched.handle.early is not None)
        return fused.combine(fused.experts(dispatched, weights), dispatched.handle)

    results = {}
    for name in ("plain", "checkpointed"):
        w1.grad = w2.grad = None
        xi = x.clone().requires_grad_(True)
        out = layer(xi) if name == "plain" else torch.utils.checkpoint.checkpoint(layer, xi, use_reentrant=True)
        (out.float() * grad_out.float()).sum().backward()
        results[name] = [_bits(t).tolist() for t in (out.detach(), xi.grad, w1.grad, w2.grad)]
    with torch.no_grad():
        no_grad_out = layer(x)
    dist.destroy_process_group()
    return {
        "same_bits": results["plain"] == results["checkpointed"],
        "no_grad_forward_equal": _bits(no_grad_out).tolist() == results["plain"][0],
        "early_launches": early_launches,
    }


def backend_glue_ep1(tokens=24, hidden=40, ffn=24, experts=3, topk=2) -> dict:
    """FusedBackend's dispatch/experts/autograd on one gloo rank vs ReferenceBackend (same weights)."""
    import torch.distributed as dist

    from comet_megatron.backends.base import ExpertWeights
    from comet_megatron.backends.reference import ReferenceBackend
    from comet_megatron.ops.activation import ExpertActivation

    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"tcp://127.0.0.1:{_free_port()}")
    group = dist.group.WORLD
    fused = _cpu_fused_backend(group, tokens, hidden, ffn, experts, topk)
    reference = ReferenceBackend(group, experts)
    gen = torch.Generator().manual_seed(5)
    w1 = (torch.randn(experts, 2 * ffn, hidden, generator=gen) * 0.1).bfloat16()
    w2 = (torch.randn(experts, hidden, ffn, generator=gen) * 0.1).bfloat16()
    x = torch.randn(tokens, hidden, generator=gen).bfloat16()
    routing_map, probs = random_routing(gen, tokens, experts, topk)
    grad_out = torch.randn(tokens, hidden, generator=gen).bfloat16()
    results = {}
    for name, backend in (("fused", fused), ("reference", reference)):
        xi = x.clone().requires_grad_(True)
        pi = probs.clone().requires_grad_(True)
        w1i, w2i = w1.clone().requires_grad_(True), w2.clone().requires_grad_(True)
        routing = build_local_routing(routing_map, pi, topk)
        counts = routing.tokens_per_expert.unsqueeze(0)
        weights = ExpertWeights(w1i, w2i, ExpertActivation(F.silu, True))
        dispatched = backend.dispatch(xi, routing, counts, weights=weights)
        gc_during_dispatch = gc.isenabled()
        if backend is fused:
            early_used = dispatched.handle.early is not None
        saved: list[torch.Tensor] = []  # what autograd keeps for the backward, to see what the backward frees
        with torch.autograd.graph.saved_tensors_hooks(functools.partial(_keep, saved), lambda t: t):
            out = backend.combine(backend.experts(dispatched, weights), dispatched.handle)
        if backend is fused:
            gc_states = (gc_during_dispatch, gc.isenabled())
        loss = (out.float() * grad_out.float()).sum()
        loss.backward(retain_graph=True)
        grads = (xi.grad, pi.grad, w1i.grad, w2i.grad)  # copies: a second backward would add into them
        results[name] = (out.detach().float(), *(g.float().clone() for g in grads))
        if backend is fused:
            freed = sorted(list(t.shape) for t in saved if t.untyped_storage().nbytes() == 0)
            try:
                loss.backward()
                second_backward = "ran"
            except RuntimeError as error:
                second_backward = str(error)
    dist.destroy_process_group()
    names = ("output", "input_grad", "probs_grad", "fc1_grad", "fc2_grad")
    errors = {n: ((f - r).norm() / r.norm()).item() for n, f, r in zip(names, results["fused"], results["reference"])}
    return {
        **errors,
        "gc_enabled_after_dispatch_and_after_forward": gc_states,
        "saved_freed_by_backward": freed,
        "second_backward": second_backward,
        "early_launch_used": early_used,
    }


if __name__ == "__main__":
    assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"
    if sys.argv[1] == "debug_spin":
        print(json.dumps(debug_spin_gives_up()))
    elif sys.argv[1].startswith("backward:"):
        with push_programs_recorded() as push_programs:
            report = simulate_backward(**json.loads(sys.argv[1][len("backward:") :]))
        print(json.dumps({**report, "push_programs": {k: sorted(v) for k, v in push_programs.items()}}))
    elif sys.argv[1] == "plan_equivalence":
        print(json.dumps(plan_equivalence()))
    elif sys.argv[1] == "guarded_launch":
        print(json.dumps(guarded_launch()))
    elif sys.argv[1] == "backend_glue_ep1":
        print(json.dumps(backend_glue_ep1()))
    elif sys.argv[1] == "recompute_glue_ep1":
        print(json.dumps(recompute_glue_ep1()))
    elif sys.argv[1] == "deferred_wgrad_glue_ep1":
        print(json.dumps(deferred_wgrad_glue_ep1()))
    else:
        print(json.dumps(simulate(**json.loads(sys.argv[1]))))
