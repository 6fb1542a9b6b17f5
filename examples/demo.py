"""The main job: an expert-parallel MoE layer through Megatron-Core, Comet vs Megatron's own layer.

    python examples/demo.py            # CPU: 2 gloo ranks, reference backend, fp32
    COMET_TEST_DEVICE=cuda python examples/demo.py   # GPU machine: NCCL, one rank per GPU (>= 2)

Both layers get the same router/expert weights and inputs; the demo prints, per rank, how far Comet's
output and gradients are from Megatron's (relative L2), and the tokens each local expert received.
Megatron's MoELayer needs CUDA in a few places; on CPU the demo applies the test suite's shims
(tests/megatron_cpu.py) to Megatron — the Comet package itself needs none.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.moe_cases import Case, run_cases  # noqa: E402
from tests.multirank import run_ranks, selected_device  # noqa: E402

DEMO = {
    "Mixtral-like top-2 (8 experts)": Case(topk=2, experts=8, hidden=256, ffn=512, tokens=512),
    "fine-grained top-4 (16 experts, shared expert, aux loss)": Case(
        topk=4, experts=16, hidden=192, ffn=96, tokens=512, shared_expert=384, aux_loss=True
    ),
}


def main() -> int:
    import torch

    ranks = 2 if selected_device() == "cpu" else max(2, torch.cuda.device_count())
    print(f"comet-megatron demo: {ranks} expert-parallel ranks on {selected_device()} (reference backend, fp32)")
    results = run_ranks(ranks, run_cases, list(DEMO), DEMO)
    worst = 0.0
    for name in DEMO:
        print(f"\n{name}")
        for rank, per_case in enumerate(results):
            m = per_case[name]
            errs = {k: v for k, v in m.items() if isinstance(v, float)}
            worst = max(worst, max(errs.values()))
            print(
                f"  rank {rank}: tokens per local expert {m['tokens_per_expert']} "
                f"(same as Megatron: {m['tokens_per_expert_equal']}); rel. error output {m['output']:.1e}, "
                f"input grad {m['input_grad']:.1e}, router grad {m['router_grad']:.1e}, "
                f"worst expert grad {max(v for k, v in errs.items() if k.startswith(('fc1', 'fc2'))):.1e}"
            )
    ok = worst <= 1e-6
    print(f"\nworst relative difference to Megatron's MoELayer: {worst:.1e} -> {'AGREES' if ok else 'DIFFERS'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
