"""Reference backend: plain PyTorch expert parallelism, the ground truth for every other backend.

dispatch: gather slot rows, ``all_to_all`` over the EP group, reorder rank-major -> expert-major.
experts:  grouped ``fc1 -> activation * prob -> fc2`` per local expert.
combine:  reorder back, ``all_to_all``, sum the top-k rows of each token.

One device-to-host copy (the ``[ep, E]`` counts matrix) per layer call provides the split sizes;
nothing else waits for the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from comet_megatron.backends.base import Dispatched, ExpertWeights, MoEBackend
from comet_megatron.comm import all_to_all
from comet_megatron.ops.grouped_linear import grouped_expert_linear
from comet_megatron.routing import (
    LocalRouting,
    inverse_permutation,
    rank_major_to_expert_major,
    receive_counts,
)


@dataclass
class ReferenceHandle:
    """Routing state of one reference dispatch, consumed by its combine.

    Attributes:
        routing: this rank's slots.
        send_splits / recv_splits: rows sent to / received from each EP rank.
        rank_to_expert_major: ``int64 [R]``, position in the expert-major buffer of each received row.
        tokens_per_expert: ``int64 [E_local]`` on the device; ``tokens_per_expert_host`` the same list.
    """

    routing: LocalRouting
    send_splits: list[int]
    recv_splits: list[int]
    rank_to_expert_major: torch.Tensor
    tokens_per_expert: torch.Tensor
    tokens_per_expert_host: list[int]


class ReferenceBackend(MoEBackend):
    name = "reference"
    fuses_communication = False

    def dispatch(self, tokens: torch.Tensor, routing: LocalRouting, counts: torch.Tensor, weights=None) -> Dispatched:
        e_local, ep, me = self.num_local_experts, self.ep_size, self.ep_rank
        counts_host = counts.tolist()  # the split sizes: the one host sync of this backend
        send_splits = [sum(counts_host[me][d * e_local : (d + 1) * e_local]) for d in range(ep)]
        mine = slice(me * e_local, (me + 1) * e_local)
        recv_splits = [sum(row[mine]) for row in counts_host]
        per_expert_host = [sum(row[me * e_local + e] for row in counts_host) for e in range(e_local)]

        send = tokens.index_select(0, routing.token_of_slot)
        received = all_to_all(send, recv_splits, send_splits, self.ep_group)
        received_probs = all_to_all(routing.probs_of_slot, recv_splits, send_splits, self.ep_group)
        to_expert_major = rank_major_to_expert_major(counts, me, e_local, sum(recv_splits))
        gather = inverse_permutation(to_expert_major)
        handle = ReferenceHandle(
            routing=routing,
            send_splits=send_splits,
            recv_splits=recv_splits,
            rank_to_expert_major=to_expert_major,
            tokens_per_expert=receive_counts(counts, me, e_local).sum(dim=0),
            tokens_per_expert_host=per_expert_host,
        )
        return Dispatched(
            hidden=received.index_select(0, gather),
            probs=received_probs.index_select(0, gather),
            tokens_per_expert=torch.tensor(per_expert_host, dtype=torch.int64),
            handle=handle,
        )

    def experts(self, dispatched: Dispatched, weights: ExpertWeights) -> torch.Tensor:
        handle: ReferenceHandle = dispatched.handle
        return grouped_mlp(
            dispatched.hidden,
            dispatched.probs,
            handle.tokens_per_expert,
            handle.tokens_per_expert_host,
            weights,
        )

    def combine(self, expert_output: torch.Tensor, handle: ReferenceHandle) -> torch.Tensor:
        rank_major = expert_output.index_select(0, handle.rank_to_expert_major)
        returned = all_to_all(rank_major, handle.send_splits, handle.recv_splits, self.ep_group)
        routing = handle.routing
        out = returned.new_zeros(routing.num_tokens, returned.shape[-1])
        return out.index_add(0, routing.token_of_slot, returned)


def grouped_mlp(
    hidden: torch.Tensor,
    probs: torch.Tensor,
    tokens_per_expert: torch.Tensor,
    tokens_per_expert_host: list[int],
    weights: ExpertWeights,
) -> torch.Tensor:
    """``fc2(activation(fc1(x)) * prob)`` per expert segment of ``hidden`` (``[N, H] -> [N, H]``)."""
    fc1_out = grouped_expert_linear(
        hidden, weights.fc1, tokens_per_expert, tokens_per_expert_host, weights.fuse_wgrad_into_main_grad
    )
    activated = weights.activation(fc1_out, probs)
    return grouped_expert_linear(
        activated, weights.fc2, tokens_per_expert, tokens_per_expert_host, weights.fuse_wgrad_into_main_grad
    )
