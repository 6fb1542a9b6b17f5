"""CometTokenDispatcher: Megatron's six-stage dispatcher contract over a Comet backend.

Stage mapping (DeepEP style: dispatch produces a handle that the experts and combine consume):

=====================  =====================================================================
dispatch_preprocess    slots of this rank's routing + the ``[ep, E]`` counts all-gather
token_dispatch         ``backend.dispatch`` (reference: all_to_all; fused: routing offsets only)
dispatch_postprocess   hands rows, tokens per local expert and probs to the experts
(experts)              ``backend.experts`` via :meth:`run_experts` (fused: dispatch ⊕ fc1, fc2 ⊕ combine)
combine_preprocess     nothing to do (the backend's combine owns its reordering)
token_combine          ``backend.combine`` (reference: all_to_all + top-k sum; fused: no-op)
combine_postprocess    restores the input's shape
=====================  =====================================================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from megatron.core.transformer.moe.token_dispatcher import MoETokenDispatcher

from comet_megatron.backends.base import Dispatched, ExpertWeights, MoEBackend
from comet_megatron.comm import all_gather_counts
from comet_megatron.routing import LocalRouting, build_local_routing
from comet_megatron.timing import process_timer, timed


class CometTokenDispatcher(MoETokenDispatcher):
    """Dispatcher of :class:`CometMoELayer`; see the module docstring for the stage mapping."""

    def __init__(
        self,
        num_local_experts: int,
        local_expert_indices: list[int],
        config,
        pg_collection,
        backend: MoEBackend,
    ) -> None:
        super().__init__(config=config, pg_collection=pg_collection)
        self.num_local_experts = num_local_experts
        self.local_expert_indices = local_expert_indices
        self.num_experts = config.num_moe_experts
        self.topk = config.moe_router_topk
        self.backend = backend
        self.hidden_shape: torch.Size | None = None
        self._routing: LocalRouting | None = None
        self._counts: torch.Tensor | None = None
        self._dispatched: Dispatched | None = None
        # set by CometGroupedMLP.bind_dispatcher: the weights its forward will pass to run_experts
        self.expert_weights: Callable[[], ExpertWeights] | None = None

    def get_expert_zero_copy_buffers(self):
        """Megatron >= 0.19 asks every dispatcher for zero-copy expert buffers; Comet has none."""
        return None, None

    def dispatch_preprocess(self, hidden_states: torch.Tensor, routing_map: torch.Tensor, probs: torch.Tensor):
        """``[..., H]`` tokens, ``bool [T, E]`` map, ``[T, E]`` probs -> ``([T, H] tokens, [T*k] probs)``."""
        self.hidden_shape = hidden_states.shape
        tokens = hidden_states.reshape(-1, hidden_states.shape[-1])
        timer = process_timer("dispatch")  # COMET_LAYER_TIMING: the host work before the counts read, in situ
        with timed(timer, "fwd.routing"):
            self._routing = build_local_routing(routing_map, probs, self.topk)
        with timed(timer, "fwd.counts_all_gather"):
            self._counts = all_gather_counts(self._routing.tokens_per_expert, self.ep_group)
        return tokens, self._routing.probs_of_slot

    def token_dispatch(self, hidden_states: torch.Tensor, probs: torch.Tensor):
        routing = self._routing
        if probs is not routing.probs_of_slot:
            routing = dataclasses.replace(routing, probs_of_slot=probs)
        weights = self.expert_weights() if self.expert_weights is not None else None
        self._dispatched = self.backend.dispatch(hidden_states, routing, self._counts, weights=weights)
        return self._dispatched.hidden, self._dispatched.probs

    def dispatch_postprocess(self, hidden_states: torch.Tensor, probs: torch.Tensor):
        return hidden_states, self._dispatched.tokens_per_expert, probs

    def run_experts(self, hidden: torch.Tensor, probs: torch.Tensor, weights: ExpertWeights) -> torch.Tensor:
        """Called by :class:`CometGroupedMLP` with what :meth:`dispatch_postprocess` returned."""
        dispatched = dataclasses.replace(self._dispatched, hidden=hidden, probs=probs)
        return self.backend.experts(dispatched, weights)

    def combine_preprocess(self, hidden_states: torch.Tensor):
        return hidden_states

    def token_combine(self, hidden_states: torch.Tensor):
        output = self.backend.combine(hidden_states, self._dispatched.handle)
        self._routing = self._counts = self._dispatched = None
        return output

    def combine_postprocess(self, hidden_states: torch.Tensor):
        return hidden_states.view(self.hidden_shape)
