"""The routing kernels (``kernels/routing.py``) give the PyTorch sort's slots, entry for entry.

On CPU its logic runs under ``TRITON_INTERPRET=1`` (in a subprocess: the flag must be set before the kernel module
is imported); on the GPU (``COMET_TEST_DEVICE=cuda``) the compiled kernel is checked the same way.
Run as ``python -m tests.test_routing_kernel`` to print the interpreter's report.
"""

from __future__ import annotations

import json

import pytest
import torch

from tests.fused_simulation import random_routing
from tests.interpreter import run_interpreted
from tests.multirank import selected_device

# (tokens, experts, topk, skew): several blocks (a block holds 4096 map entries: 16 rows at 256 experts, 1024 at 4),
# more blocks than one step of the block-count sum takes (300 x 200: 19 blocks, 16 per step), expert counts that are
# not powers of two, experts without tokens, one expert taking most tokens, no tokens
CASES = [
    (7, 3, 2, None),
    (100, 60, 4, None),
    (100, 256, 8, None),
    (300, 200, 6, None),
    (3000, 4, 2, None),
    (4097, 8, 2, None),
    (50, 6, 3, "starve"),
    (40, 4, 1, "one_hot_expert"),
    (300, 5, 5, None),
    (1, 1, 1, None),
    (0, 8, 2, None),
]


def routing_mismatches(device: str, cases=CASES, seed: int = 0) -> dict:
    """Fields where the kernel's routing differs from the sort's, per case (an empty list: equal), with the
    probabilities' gradients through both."""
    from comet_megatron.routing import build_local_routing

    gen = torch.Generator().manual_seed(seed)
    report = {"checked": 0, "mismatches": []}
    for tokens, experts, topk, skew in cases:
        routing_map, probs = random_routing(gen, tokens, experts, topk, skew)
        routing_map, probs = routing_map.to(device), probs.to(device)
        grads = []
        results = []
        for use_kernel in (False, True):
            p = probs.clone().requires_grad_(True)
            routing = build_local_routing(routing_map, p, topk, use_kernel=use_kernel)
            weights = torch.arange(routing.num_slots, dtype=p.dtype, device=device) + 1
            (routing.probs_of_slot * weights).sum().backward()
            results.append(routing)
            grads.append(p.grad)
        sort, kernel = results
        bad = [
            name
            for name in ("token_of_slot", "expert_of_slot", "probs_of_slot", "tokens_per_expert")
            if not torch.equal(getattr(sort, name).detach(), getattr(kernel, name).detach())
        ]
        if kernel.slots_by_token is None or not torch.equal(sort.slot_of_token(), kernel.slot_of_token()):
            bad.append("slot_of_token")
        if not torch.equal(grads[0], grads[1]):
            bad.append("probs grad")
        report["checked"] += 1
        if bad:
            report["mismatches"].append({"case": [tokens, experts, topk, skew], "fields": bad})
    return report


def test_routing_kernel_interpreted_equals_the_sort():
    report = run_interpreted("tests.test_routing_kernel", timeout=300)
    assert report["checked"] == len(CASES) and report["mismatches"] == [], report


def test_build_local_routing_defaults_to_the_sort_on_cpu():
    from comet_megatron.routing import build_local_routing

    routing_map, probs = random_routing(torch.Generator().manual_seed(1), 16, 4, 2)
    routing = build_local_routing(routing_map, probs, 2)
    assert routing.slots_by_token is None  # no kernel on CPU tensors
    expected = torch.argsort(routing.token_of_slot, stable=True).view(16, 2)
    assert torch.equal(routing.slot_of_token(), expected)
    assert torch.equal(routing.token_of_slot[routing.slot_of_token()], torch.arange(16)[:, None].expand(16, 2))


@pytest.mark.gpu
def test_routing_kernel_compiled_equals_the_sort():
    if selected_device() != "cuda" or not torch.cuda.is_available():
        pytest.skip("needs COMET_TEST_DEVICE=cuda and a GPU")
    large = [(8192, 60, 4, None), (4096, 256, 8, None), (8192, 8, 2, None), (16384, 64, 8, "one_hot_expert")]
    report = routing_mismatches("cuda", CASES + large)
    assert report["checked"] == len(CASES) + len(large) and report["mismatches"] == [], report


if __name__ == "__main__":
    print(json.dumps(routing_mismatches("cpu")))
