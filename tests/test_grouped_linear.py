"""Pure-PyTorch building blocks against brute force (CPU, in-process, no process groups).

* ``comet_megatron.ops.grouped_linear``: forward/backward of ``grouped_expert_linear`` vs one
  ``torch.nn.functional.linear`` per expert (float32 and float64, experts with zero rows, no rows at
  all), and Megatron's gradient-accumulation fusion (``main_grad`` / ``grad_added_to_main_grad``).
* ``comet_megatron.routing``: slot order vs Megatron's ``permute``, and every offset/index function vs
  Python loops over random routing maps for EP sizes 1, 2, 4, simulating all ranks in one process.
"""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

from comet_megatron.ops.grouped_linear import grouped_expert_linear
from comet_megatron.routing import (
    build_local_routing,
    expert_major_offsets,
    rank_major_to_expert_major,
    slot_destination_rows,
)

# grouped_expert_linear ----------------------------------------------------------------------------

COUNT_CASES = {
    "uneven": [3, 0, 5, 1],
    "first_and_last_empty": [0, 4, 2, 0],
    "single_expert": [6],
    "all_empty": [0, 0, 0],
}


def _inputs(counts: list[int], in_features: int, out_features: int, dtype, seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(counts), in_features, generator=gen, dtype=dtype)
    weight = torch.randn(len(counts), out_features, in_features, generator=gen, dtype=dtype)
    grad_out = torch.randn(sum(counts), out_features, generator=gen, dtype=dtype)
    return x, weight, grad_out


def _reference(x, weight, counts, grad_out):
    """Per-expert linear layers through autograd: (y, dx, dW)."""
    x = x.detach().clone().requires_grad_(True)
    weights = [w.detach().clone().requires_grad_(True) for w in weight]
    parts = [F.linear(rows, w) for rows, w in zip(torch.split(x, counts), weights)]
    y = torch.cat(parts) if parts else x.new_zeros(0, weight.shape[1])
    (y * grad_out).sum().backward()
    grad_w = torch.stack([w.grad if w.grad is not None else torch.zeros_like(w) for w in weights])
    return y.detach(), x.grad, grad_w


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", list(COUNT_CASES))
def test_grouped_linear_matches_per_expert_linear(case, dtype):
    counts = COUNT_CASES[case]
    x, weight, grad_out = _inputs(counts, in_features=7, out_features=5, dtype=dtype, seed=len(case))
    ref_y, ref_dx, ref_dw = _reference(x, weight, counts, grad_out)

    x = x.requires_grad_(True)
    weight = weight.requires_grad_(True)
    y = grouped_expert_linear(x, weight, torch.tensor(counts, dtype=torch.int64), counts)
    (y * grad_out).sum().backward()

    assert y.dtype == dtype and y.shape == (sum(counts), 5)
    torch.testing.assert_close(y, ref_y, **_tol(dtype))
    if sum(counts):
        torch.testing.assert_close(x.grad, ref_dx, **_tol(dtype))
    torch.testing.assert_close(weight.grad, ref_dw, **_tol(dtype))
    for e, c in enumerate(counts):
        if c == 0:
            assert not weight.grad[e].any(), "an expert without rows got a weight gradient"
    if case == "uneven":
        assert weight.grad[0].abs().sum() > 0  # the comparison is not between zeros


def test_grouped_linear_detects_a_wrong_segment():
    """Negative control: the per-expert reference notices rows given to the wrong expert."""
    counts = [3, 0, 5, 1]
    x, weight, grad_out = _inputs(counts, 7, 5, torch.float64, seed=0)
    ref_y, _, _ = _reference(x, weight, counts, grad_out)
    shifted = [4, 0, 4, 1]
    y = grouped_expert_linear(x, weight, torch.tensor(shifted), shifted)
    assert not torch.allclose(y, ref_y)


def test_grouped_linear_without_weight_grad():
    counts = [2, 3]
    x, weight, grad_out = _inputs(counts, 4, 6, torch.float64, seed=3)
    _, ref_dx, _ = _reference(x, weight, counts, grad_out)
    x.requires_grad_(True)
    y = grouped_expert_linear(x, weight, torch.tensor(counts), counts)  # frozen weight
    (y * grad_out).sum().backward()
    torch.testing.assert_close(x.grad, ref_dx)
    assert weight.grad is None


# gradient-accumulation fusion --------------------------------------------------------------------


def _fused_weight(counts, flag: bool | None, zero_out: bool = False, seed: int = 11):
    x, weight, grad_out = _inputs(counts, in_features=6, out_features=4, dtype=torch.float32, seed=seed)
    weight.requires_grad_(True)
    weight.main_grad = torch.randn(weight.shape, generator=torch.Generator().manual_seed(seed + 1))
    if flag is not None:
        weight.grad_added_to_main_grad = flag
    if zero_out:
        weight.zero_out_wgrad = True
    return x, weight, grad_out


def _run(x, weight, grad_out, counts, fuse: bool):
    y = grouped_expert_linear(x, weight, torch.tensor(counts), counts, fuse_wgrad_into_main_grad=fuse)
    (y * grad_out).sum().backward()


@pytest.fixture(params=["grouped", "per_expert"])
def accumulation(request, monkeypatch):
    """Both ways of adding the weight gradient into ``main_grad`` (``COMET_WGRAD_ACCUMULATION``)."""
    monkeypatch.setenv("COMET_WGRAD_ACCUMULATION", request.param)
    return request.param


@pytest.mark.parametrize("zero_out", [False, True])
def test_wgrad_fused_into_main_grad(zero_out, accumulation):
    counts = [3, 0, 4]
    x, weight, grad_out = _fused_weight(counts, flag=False, zero_out=zero_out)
    initial = weight.main_grad.clone()
    _, _, true_wgrad = _reference(x, weight, counts, grad_out)

    _run(x, weight, grad_out, counts, fuse=True)

    torch.testing.assert_close(weight.main_grad, initial + true_wgrad, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(weight.main_grad, initial)
    assert weight.grad_added_to_main_grad is True
    assert weight.grad is not None and weight.grad.shape == weight.shape and weight.grad.dtype == weight.dtype
    if zero_out:
        assert not weight.grad.any()


def test_wgrad_fusion_accumulates_over_micro_batches(accumulation):
    counts = [2, 5]
    x, weight, grad_out = _fused_weight(counts, flag=False, seed=21)
    initial = weight.main_grad.clone()
    _, _, true_wgrad = _reference(x, weight, counts, grad_out)
    _run(x, weight, grad_out, counts, fuse=True)
    _run(x, weight, grad_out, counts, fuse=True)
    torch.testing.assert_close(weight.main_grad, initial + 2 * true_wgrad, rtol=1e-6, atol=1e-6)


def test_wgrad_fusion_without_flag_attribute_returns_no_grad(accumulation):
    counts = [3, 2]
    x, weight, grad_out = _fused_weight(counts, flag=None, seed=31)
    initial = weight.main_grad.clone()
    _, _, true_wgrad = _reference(x, weight, counts, grad_out)
    _run(x, weight, grad_out, counts, fuse=True)
    assert weight.grad is None
    assert not hasattr(weight, "grad_added_to_main_grad")
    torch.testing.assert_close(weight.main_grad, initial + true_wgrad, rtol=1e-6, atol=1e-6)


def test_no_fusion_leaves_main_grad_alone(accumulation):
    counts = [3, 2]
    x, weight, grad_out = _fused_weight(counts, flag=False, seed=41)
    initial = weight.main_grad.clone()
    _, _, true_wgrad = _reference(x, weight, counts, grad_out)
    _run(x, weight, grad_out, counts, fuse=False)
    assert torch.equal(weight.main_grad, initial)
    assert weight.grad_added_to_main_grad is False
    torch.testing.assert_close(weight.grad, true_wgrad, rtol=1e-6, atol=1e-6)


def test_per_expert_accumulation_in_the_weights_dtype(monkeypatch):
    """A ``main_grad`` in the weights' own dtype (no fp32 accumulation in Megatron's DDP) is summed in place."""
    monkeypatch.setenv("COMET_WGRAD_ACCUMULATION", "per_expert")
    counts = [4, 0, 3]
    x, weight, grad_out = _inputs(counts, in_features=6, out_features=4, dtype=torch.float64, seed=51)
    weight.requires_grad_(True)
    weight.main_grad = torch.randn(weight.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(52))
    weight.grad_added_to_main_grad = False
    initial = weight.main_grad.clone()
    _, _, true_wgrad = _reference(x, weight, counts, grad_out)
    _run(x, weight, grad_out, counts, fuse=True)
    torch.testing.assert_close(weight.main_grad, initial + true_wgrad)


@pytest.mark.parametrize(
    "mode,flag,fuses",
    [("auto", False, True), ("grouped", False, True), ("megatron", False, False), ("megatron", True, True)],
)
def test_when_comet_fuses_into_main_grad(monkeypatch, mode, flag, fuses):
    from comet_megatron.ops.grouped_linear import fuses_into_main_grad

    monkeypatch.setenv("COMET_WGRAD_ACCUMULATION", mode)
    assert fuses_into_main_grad(flag) is fuses


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"PREFETCH_GRAD": 5}', "PREFETCH_GRAD=5 must be 0, 1 or 2"),
        ('{"BM": 100}', "BM=100: tile sides"),
        ('{"TILE": 1}', "unknown field\\(s\\) TILE"),
        ("[1]", "not a JSON object"),
        ("{BN: 64}", "Expecting property name"),
    ],
)
def test_bad_wgrad_kernel_env_fails_when_the_experts_are_built(monkeypatch, text, message):
    from comet_megatron.ops.grouped_linear import check_wgrad_environment, wgrad_kernel_overrides

    monkeypatch.setenv("COMET_WGRAD_KERNEL_CONFIG", text)
    with pytest.raises(ValueError, match="COMET_WGRAD_KERNEL_CONFIG=.*" + message):
        check_wgrad_environment()
    monkeypatch.setenv("COMET_WGRAD_KERNEL_CONFIG", '{"PREFETCH_GRAD": 2, "BN": 256}')
    assert wgrad_kernel_overrides() == {"PREFETCH_GRAD": 2, "BN": 256}
    monkeypatch.delenv("COMET_WGRAD_KERNEL_CONFIG")
    assert wgrad_kernel_overrides() == {}


@pytest.mark.parametrize("text", ["0", "9", "two", "-1"])
def test_bad_wgrad_streams_env_fails_when_the_experts_are_built(monkeypatch, text):
    from comet_megatron.ops.grouped_linear import PER_EXPERT_STREAMS, check_wgrad_environment, per_expert_streams

    monkeypatch.setenv("COMET_WGRAD_STREAMS", text)
    with pytest.raises(ValueError, match=f"COMET_WGRAD_STREAMS='{text}': give a number of CUDA streams from 1 to 8"):
        check_wgrad_environment()
    monkeypatch.setenv("COMET_WGRAD_STREAMS", "1")
    assert per_expert_streams() == 1
    monkeypatch.delenv("COMET_WGRAD_STREAMS")
    assert per_expert_streams() == PER_EXPERT_STREAMS


def test_accumulation_method_on_cpu_and_unknown_modes(monkeypatch):
    from comet_megatron.ops.grouped_linear import accumulation_method

    weight = torch.zeros(2, 3, 4, dtype=torch.bfloat16)
    weight.main_grad = torch.zeros(2, 3, 4)
    x = torch.zeros(5, 4, dtype=torch.bfloat16)
    monkeypatch.delenv("COMET_WGRAD_ACCUMULATION", raising=False)
    assert accumulation_method(weight, x, True) == "grouped"  # per-expert GEMMs and the kernel are GPU choices
    assert accumulation_method(torch.zeros(2, 3, 4), x, True) is None  # no main_grad: nothing to fuse into
    assert accumulation_method(weight, x, False) is None
    monkeypatch.setenv("COMET_WGRAD_ACCUMULATION", "per_expert")
    assert accumulation_method(weight, x, True) == "per_expert"
    monkeypatch.setenv("COMET_WGRAD_ACCUMULATION", "kernel")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert accumulation_method(weight, x, True) == "grouped"  # no GPU for the kernel
    monkeypatch.setenv("COMET_WGRAD_ACCUMULATION", "fast")
    with pytest.raises(
        ValueError, match="COMET_WGRAD_ACCUMULATION='fast'.*auto, per_expert, kernel, grouped, megatron"
    ):
        accumulation_method(weight, x, True)


@pytest.mark.parametrize(
    "mode,rows_dtype,expected",
    [
        ("megatron", torch.bfloat16, "grouped"),  # gradient_accumulation_fusion on: Megatron's way, not auto's
        ("grouped", torch.bfloat16, "grouped"),
        ("per_expert", torch.bfloat16, "per_expert"),
        ("kernel", torch.bfloat16, "kernel"),
        ("kernel", torch.float32, "grouped"),  # the kernel reads bf16/fp16 rows only
        ("auto", torch.bfloat16, "per_expert"),  # Mixtral-size experts
    ],
)
def test_accumulation_method_on_the_gpu(monkeypatch, mode, rows_dtype, expected):
    """The choice for GPU rows (a stand-in with ``is_cuda``: the rule needs no GPU)."""
    from types import SimpleNamespace

    from comet_megatron.ops import grouped_linear

    monkeypatch.setattr(grouped_linear, "HAVE_TRITON", True)
    monkeypatch.setenv("COMET_WGRAD_ACCUMULATION", mode)
    weight = SimpleNamespace(shape=(4, 28672, 4096), main_grad=torch.zeros(1))
    rows = SimpleNamespace(is_cuda=True, dtype=rows_dtype, shape=(16384, 4096))
    assert grouped_linear.accumulation_method(weight, rows, True) == expected


# (local experts, out, in, rows): the cases at EP=2 and the Qwen3 training example at EP=1
@pytest.mark.parametrize(
    "shape,expected",
    [
        ((4, 28672, 4096, 16384), "per_expert"),  # Mixtral fc1, 8192 tokens per rank
        ((4, 4096, 14336, 8192), "per_expert"),  # Mixtral fc2, 4096 tokens (training)
        ((8, 4096, 6400, 16384), "per_expert"),  # Phi fc2
        ((32, 5120, 3584, 65536), "per_expert"),  # Qwen2-57B fc1
        ((32, 3584, 2560, 32768), "per_expert"),  # Qwen2-57B fc2, 4096 tokens (training): 18.8 GFLOP per expert
        ((128, 4096, 7168, 34816), "kernel"),  # DSv3 fc1 with 10% more rows than even routing: 16.0 GFLOP per expert
        ((30, 2816, 2048, 32768), "kernel"),  # Qwen1.5 fc1: 12.6 GFLOP per expert
        ((128, 4096, 7168, 32768), "kernel"),  # DSv3
        ((128, 1536, 2048, 32768), "kernel"),  # Qwen3 at EP=1
    ],
)
def test_auto_accumulation_method_on_the_gpu(shape, expected):
    from comet_megatron.ops.grouped_linear import auto_accumulation_method

    assert auto_accumulation_method(*shape, kernel_ok=True) == expected
    assert auto_accumulation_method(*shape, kernel_ok=False) == ("grouped" if expected == "kernel" else expected)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["auto", "grouped", "per_expert", "kernel"])
def test_wgrad_into_fp32_main_grad_on_gpu(monkeypatch, mode):
    """bf16 experts on the GPU: each way of summing into an fp32 ``main_grad`` against fp32 products of the same
    bf16 inputs; the per-expert GEMMs and the kernel (``auto``'s choice for these small experts) keep fp32 accuracy,
    the grouped path rounds the gradient to bf16 first (PyTorch's own bf16 error)."""
    from tests.multirank import selected_device

    if selected_device() != "cuda" or not torch.cuda.is_available():
        pytest.skip("needs COMET_TEST_DEVICE=cuda and a GPU")
    monkeypatch.setenv("COMET_WGRAD_ACCUMULATION", mode)
    counts = [1000, 0, 333]
    gen = torch.Generator(device="cuda").manual_seed(7)
    x = torch.randn(sum(counts), 512, device="cuda", dtype=torch.bfloat16, generator=gen)
    grad_out = torch.randn(sum(counts), 384, device="cuda", dtype=torch.bfloat16, generator=gen)
    weight = torch.randn(3, 384, 512, device="cuda", dtype=torch.bfloat16, generator=gen).requires_grad_(True)
    weight.main_grad = torch.randn(weight.shape, device="cuda", generator=gen)
    weight.grad_added_to_main_grad = False
    expected = weight.main_grad.clone()
    for e, (dy, xe) in enumerate(zip(grad_out.split(counts), x.split(counts))):
        expected[e] += dy.t().float() @ xe.float()

    y = grouped_expert_linear(x, weight, torch.tensor(counts, device="cuda"), counts, fuse_wgrad_into_main_grad=True)
    y.backward(grad_out)

    err = float((weight.main_grad - expected).norm() / expected.norm())
    assert weight.grad_added_to_main_grad is True and weight.grad.shape == weight.shape
    assert err < (1e-5 if mode != "grouped" else 4e-3), err


@pytest.mark.gpu
@pytest.mark.parametrize("streams", [2, 3])
def test_per_expert_gemms_on_several_streams(streams):
    """The per-expert GEMMs spread over side streams: every expert's sum lands in ``main_grad`` before the current
    stream goes on (a read right after the call, no synchronize), with fp32 accuracy; experts without rows untouched."""
    from comet_megatron.ops.grouped_linear import add_weight_grad_to_main_grad
    from tests.multirank import selected_device

    if selected_device() != "cuda" or not torch.cuda.is_available():
        pytest.skip("needs COMET_TEST_DEVICE=cuda and a GPU")
    counts = [700, 0, 333, 1024, 5]
    gen = torch.Generator(device="cuda").manual_seed(11)
    x = torch.randn(sum(counts), 1024, device="cuda", dtype=torch.bfloat16, generator=gen)
    grad_out = torch.randn(sum(counts), 2048, device="cuda", dtype=torch.bfloat16, generator=gen)
    main_grad = torch.randn(len(counts), 2048, 1024, device="cuda", generator=gen)
    expected = main_grad.clone()
    for e, (dy, xe) in enumerate(zip(grad_out.split(counts), x.split(counts))):
        expected[e] += dy.t().float() @ xe.float()
    from comet_megatron.ops import grouped_linear

    add_weight_grad_to_main_grad(main_grad, grad_out, x, counts, streams=streams)
    observed = main_grad.clone()  # on the current stream, ordered after the side streams' GEMMs
    assert len(grouped_linear._SIDE_STREAMS[x.device]) >= streams - 1  # the side streams were used
    assert torch.equal(observed[1], expected[1])
    err = float((observed - expected).norm() / expected.norm())
    assert err < 1e-5, err


# routing ------------------------------------------------------------------------------------------

# (ep, experts, topk)
ROUTING_CASES = [(1, 1, 1), (1, 3, 2), (2, 2, 1), (2, 6, 2), (2, 8, 4), (4, 4, 1), (4, 8, 2), (4, 12, 3)]
SEEDS = [0, 1, 2]


def _rotate_options(fn) -> list[bool]:
    return [False, True] if "rotate" in inspect.signature(fn).parameters else [False]


def _random_routing(tokens: int, experts: int, topk: int, gen, avoid: int | None = None):
    """``bool [T, E]`` with exactly ``topk`` experts per token, and probs that are zero elsewhere."""
    scores = torch.rand(tokens, experts, generator=gen)
    if avoid is not None and experts - 1 >= topk:
        scores[:, avoid] = -1.0  # this expert gets no tokens from this rank
    chosen = scores.topk(topk, dim=1).indices
    routing_map = torch.zeros(tokens, experts, dtype=torch.bool).scatter_(1, chosen, True)
    probs = torch.rand(tokens, experts, generator=gen, dtype=torch.float64) * routing_map
    return routing_map, probs


def _world(ep: int, experts: int, topk: int, seed: int):
    """Every rank's routing: random token counts (one rank may have none), one starved expert."""
    gen = torch.Generator().manual_seed(seed)
    token_counts = [int(t) for t in torch.randint(1, 14, (ep,), generator=gen)]
    if ep > 1 and seed == 1:
        token_counts[ep - 1] = 0
    starved = int(torch.randint(0, experts, (1,), generator=gen))
    maps = [_random_routing(t, experts, topk, gen, avoid=starved) for t in token_counts]
    routings = [build_local_routing(m, p, topk) for m, p in maps]
    counts = torch.stack([r.tokens_per_expert for r in routings])  # what all_gather_counts builds
    return maps, routings, counts


def _slots_brute_force(routing_map) -> list[tuple[int, int]]:
    """(token, expert) pairs in expert-major order, token ascending inside an expert."""
    tokens, experts = routing_map.shape
    return [(t, e) for e in range(experts) for t in range(tokens) if routing_map[t, e]]


def _source_order_brute_force(ep: int, dest: int, rotate: bool) -> list[int]:
    return [(dest + j) % ep for j in range(ep)] if rotate else list(range(ep))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ep,experts,topk", ROUTING_CASES)
def test_local_routing_matches_brute_force_and_megatron_permute(ep, experts, topk, seed):
    from megatron.core.transformer.moe.moe_utils import permute

    maps, routings, _ = _world(ep, experts, topk, seed)
    for (routing_map, probs), routing in zip(maps, routings):
        slots = _slots_brute_force(routing_map)
        assert routing.num_slots == len(slots) == routing_map.shape[0] * topk
        assert routing.token_of_slot.tolist() == [t for t, _ in slots]
        assert routing.expert_of_slot.tolist() == [e for _, e in slots]
        assert routing.probs_of_slot.tolist() == [probs[t, e].item() for t, e in slots]
        assert routing.tokens_per_expert.tolist() == [int(routing_map[:, e].sum()) for e in range(experts)]
        if routing_map.shape[0] == 0:
            continue
        hidden = torch.randn(routing_map.shape[0], 3, dtype=torch.float64)
        permuted, permuted_probs, sorted_indices = permute(hidden, routing_map, probs=probs)
        assert torch.equal(routing.token_of_slot, sorted_indices)
        assert torch.equal(routing.probs_of_slot, permuted_probs)
        assert torch.equal(hidden.index_select(0, routing.token_of_slot), permuted)


def test_local_routing_probs_keep_autograd():
    routing_map, probs = _random_routing(5, 4, 2, torch.Generator().manual_seed(0))
    probs = probs.clone().requires_grad_(True)
    routing = build_local_routing(routing_map, probs, 2)
    routing.probs_of_slot.sum().backward()
    assert torch.equal(probs.grad, routing_map.to(probs.dtype))


def test_local_routing_rejects_mismatched_probs():
    with pytest.raises(ValueError):
        build_local_routing(torch.zeros(3, 4, dtype=torch.bool), torch.zeros(3, 5), 1)


@pytest.mark.parametrize("rotate", _rotate_options(expert_major_offsets))
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ep,experts,topk", ROUTING_CASES)
def test_expert_major_offsets(ep, experts, topk, seed, rotate):
    _, _, counts = _world(ep, experts, topk, seed)
    e_local = experts // ep
    kwargs = {"rotate": True} if rotate else {}
    offsets = expert_major_offsets(counts, e_local, **kwargs)
    assert offsets.shape == (ep, ep, e_local)
    for dest in range(ep):
        row = 0
        for e in range(e_local):
            for src in _source_order_brute_force(ep, dest, rotate):
                assert offsets[dest, src, e].item() == row, (dest, src, e)
                row += counts[src, dest * e_local + e].item()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ep,experts,topk", ROUTING_CASES)
def test_slot_destination_rows_fill_every_buffer_exactly_once(ep, experts, topk, seed):
    """All ranks scatter their slots; each destination buffer must be (local expert, source, slot)."""
    maps, routings, counts = _world(ep, experts, topk, seed)
    e_local = experts // ep
    rows_at = [int(counts[:, d * e_local : (d + 1) * e_local].sum()) for d in range(ep)]
    buffers = [torch.full((n, 2), -1, dtype=torch.int64) for n in rows_at]  # (source rank, slot)
    writes = [torch.zeros(n, dtype=torch.int64) for n in rows_at]
    for src, routing in enumerate(routings):
        dest_rank, dest_row = slot_destination_rows(routing, counts, src, e_local)
        assert dest_rank.shape == dest_row.shape == (routing.num_slots,)
        for slot, (d, r) in enumerate(zip(dest_rank.tolist(), dest_row.tolist())):
            assert d == routing.expert_of_slot[slot].item() // e_local
            assert 0 <= r < rows_at[d], (src, slot, d, r)
            buffers[d][r] = torch.tensor([src, slot])
            writes[d][r] += 1
    for d in range(ep):
        assert torch.equal(writes[d], torch.ones_like(writes[d])), f"rank {d}: rows written {writes[d].tolist()}"
        expected = [
            [src, slot]
            for e in range(e_local)
            for src in range(ep)
            for slot, expert in enumerate(routings[src].expert_of_slot.tolist())
            if expert == d * e_local + e
        ]
        assert buffers[d].tolist() == expected


@pytest.mark.parametrize("rotate", _rotate_options(rank_major_to_expert_major))
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ep,experts,topk", ROUTING_CASES)
def test_rank_major_to_expert_major(ep, experts, topk, seed, rotate):
    _, routings, counts = _world(ep, experts, topk, seed)
    e_local = experts // ep
    kwargs = {"rotate": True} if rotate else {}
    for dest in range(ep):
        mine = range(dest * e_local, (dest + 1) * e_local)
        # what all_to_all delivers: source-rank blocks, each in the source's slot order
        rank_major = [
            (src, slot)
            for src in range(ep)
            for slot, expert in enumerate(routings[src].expert_of_slot.tolist())
            if expert in mine
        ]
        index = rank_major_to_expert_major(counts, dest, e_local, len(rank_major), **kwargs)
        assert sorted(index.tolist()) == list(range(len(rank_major))), "not a permutation"
        expert_major = [None] * len(rank_major)
        for i, target in enumerate(index.tolist()):
            expert_major[target] = rank_major[i]
        expected = [
            (src, slot)
            for e in mine
            for src in _source_order_brute_force(ep, dest, rotate)
            for slot, expert in enumerate(routings[src].expert_of_slot.tolist())
            if expert == e
        ]
        assert expert_major == expected


def test_routing_cases_cover_the_edges():
    """The random worlds really contain empty ranks and experts without rows."""
    empty_rank = starved_expert = False
    for ep, experts, topk in ROUTING_CASES:
        for seed in SEEDS:
            maps, _, counts = _world(ep, experts, topk, seed)
            empty_rank |= any(m.shape[0] == 0 for m, _ in maps)
            starved_expert |= bool((counts.sum(0) == 0).any())
    assert empty_rank and starved_expert
