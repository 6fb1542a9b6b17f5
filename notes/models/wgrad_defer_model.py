"""A timing model of one micro-batch's MoE backward at EP=2: how much deferring weight gradients can save.

Not a measurement: it predicts, from session 17's in-situ numbers (Mixtral at EP=2, per call on the busier rank:
dispatch_dgrad + activation backward 1.76 ms and fc1 data-gradient + combine 2.96 ms and weight gradients 5.08 ms for
8755 rows; attention backward 8.6 ms; 16384 rows per call over both ranks, rank 0's share ~N(0.466, 0.163), which gives
a busiest rank of ~10350 rows on average as measured), what ``COMET_WGRAD_DEFER=N`` should save per MoE call.

Each layer (backward order): a rank's data-gradient kernel starts when its previous layer is done and the peer's output
gradient exists (the peer's attention backward of the layer above); then its input-gradient push; then the weight
gradients due in this slot; then the reduce, which waits for the peer's push; then attention backward. With depth N a
layer's weight gradients run N layers later, the rest after the last layer. ``python notes/models/wgrad_defer_model.py``

``--step`` models a whole step (4 micro-batches, forward 4.55 ms per 8755 rows + attention 5.2 ms per layer, the
counts all-gather syncing the ranks at each layer) and a variant not built: a backward's leftover jobs carried into the
next micro-batch's forward, where the lighter rank of a layer runs as many as its predicted wait (rows behind the
busiest rank) covers; the last micro-batch drains at its end.
"""

from __future__ import annotations

import argparse
import random
import statistics

ROWS_PER_CALL = 16384
DGRAD_PER_ROW = (1.76 + 2.96) / 8755  # ms
WGRAD_PER_ROW = 5.08 / 8755
ATTENTION_BWD = 8.6
SHARE_MEAN, SHARE_SD = 0.466, 0.163


def rank0_share(rng: random.Random) -> float:
    while True:
        share = rng.gauss(SHARE_MEAN, SHARE_SD)
        if 0.05 < share < 0.95:
            return share


def backward_ms(rng: random.Random, layers: int, depth: int) -> float:
    rows = [(s * ROWS_PER_CALL, (1 - s) * ROWS_PER_CALL) for s in (rank0_share(rng) for _ in range(layers))]
    done, grad_ready = [0.0, 0.0], [0.0, 0.0]
    queued: list[list[float]] = [[], []]
    for layer_rows in rows:
        push = [max(done[r], grad_ready[1 - r]) + DGRAD_PER_ROW * layer_rows[r] for r in range(2)]
        before_reduce = []
        for r in range(2):
            queued[r].append(WGRAD_PER_ROW * layer_rows[r])
            t = push[r]
            while len(queued[r]) > depth:
                t += queued[r].pop(0)
            before_reduce.append(t)
        done = [max(before_reduce[r], push[1 - r]) + ATTENTION_BWD for r in range(2)]
        grad_ready = list(done)
    return max(done[r] + sum(queued[r]) for r in range(2))


FWD_PER_ROW = (2.94 + 1.61) / 8755
ATTENTION_FWD = 5.2


def step_ms(rng: random.Random, depth: int, carry: bool, layers: int = 4, micro_batches: int = 4) -> float:
    done = [0.0, 0.0]
    queued: list[list[float]] = [[], []]  # jobs: fc1's (2/3 of a layer's weight-gradient time), fc2's (1/3)
    for micro_batch in range(micro_batches):
        rows = [(s * ROWS_PER_CALL, (1 - s) * ROWS_PER_CALL) for s in (rank0_share(rng) for _ in range(layers))]
        for layer_rows in rows:
            push = [max(done) + FWD_PER_ROW * layer_rows[r] for r in range(2)]
            before_reduce = []
            for r in range(2):
                t, slack = push[r], max(0.0, (layer_rows[1 - r] - layer_rows[r]) * FWD_PER_ROW)
                while carry and queued[r] and t - push[r] + queued[r][0] <= slack + 0.5 * queued[r][0]:
                    t += queued[r].pop(0)
                before_reduce.append(t)
            done = [max(before_reduce[r], push[1 - r]) + ATTENTION_FWD for r in range(2)]
        grad_ready = list(done)
        for layer_rows in reversed(rows):
            push = [max(done[r], grad_ready[1 - r]) + DGRAD_PER_ROW * layer_rows[r] for r in range(2)]
            before_reduce = []
            for r in range(2):
                wgrad = WGRAD_PER_ROW * layer_rows[r]
                queued[r] += [wgrad * 2 / 3, wgrad / 3]
                t = push[r]
                while len(queued[r]) > 2 * depth:
                    t += queued[r].pop(0)
                before_reduce.append(t)
            done = [max(before_reduce[r], push[1 - r]) + ATTENTION_BWD for r in range(2)]
            grad_ready = list(done)
        if not carry or micro_batch == micro_batches - 1:
            done = [done[r] + sum(queued[r]) for r in range(2)]
            queued = [[], []]
    return max(done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, nargs="+", default=[4, 32])
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--step", action="store_true", help="a whole step, with and without carrying into forwards")
    args = parser.parse_args()
    if args.step:
        base = statistics.mean(step_ms(random.Random(i), 0, False) for i in range(args.samples))
        for depth in args.depths:
            for carry in (False, True):
                mean = statistics.mean(step_ms(random.Random(i), depth, carry) for i in range(args.samples))
                print(f"step, depth {depth}, carried into forwards {carry}: {(base - mean) / 16:.3f} ms saved per call")
        return
    for layers in args.layers:
        base = statistics.mean(backward_ms(random.Random(i), layers, 0) for i in range(args.samples))
        for depth in args.depths:
            mean = statistics.mean(backward_ms(random.Random(i), layers, depth) for i in range(args.samples))
            print(f"{layers} layers, depth {depth}: {(base - mean) / layers:.3f} ms saved per MoE call")


if __name__ == "__main__":
    main()
