"""The backend seam: three steps every backend implements, with a handle passed between them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from comet_megatron.ops.activation import ExpertActivation
from comet_megatron.routing import LocalRouting


@dataclass(frozen=True)
class ExpertWeights:
    """The local experts' parameters and what runs between them.

    Attributes:
        fc1: ``[E_local, F or 2F, H]`` (``[gate | linear]`` halves for GLU).
        fc2: ``[E_local, H, F]``.
        activation: the activation with router-probability scaling.
        fuse_wgrad_into_main_grad: add the weight gradients into the parameters' ``main_grad`` (where they
            have one) and return Megatron's placeholder gradient; see
            :func:`comet_megatron.ops.grouped_linear.fuses_into_main_grad`.
    """

    fc1: torch.Tensor
    fc2: torch.Tensor
    activation: ExpertActivation
    fuse_wgrad_into_main_grad: bool = False


@dataclass
class Dispatched:
    """What ``dispatch`` hands to the experts.

    Attributes:
        hidden: rows the experts consume — expert-major rows received from every rank
            (reference) or this rank's own tokens, still undispatched (fused backends move them
            inside the expert kernels).
        probs: router probability per row of ``hidden`` (per slot for fused backends).
        tokens_per_expert: ``int64 [E_local]`` rows per local expert; a CPU tensor when the backend
            knows it on the host (Megatron's experts expect that), else a device tensor.
        handle: backend-specific routing state; ``experts`` and ``combine`` consume it.
    """

    hidden: torch.Tensor
    probs: torch.Tensor
    tokens_per_expert: torch.Tensor
    handle: Any


class MoEBackend(ABC):
    """One expert-parallel MoE execution strategy for one EP group.

    ``dispatch`` -> ``experts`` -> ``combine`` mirrors Megatron's dispatcher/experts split. A backend
    that fuses communication into the expert GEMMs (``fuses_communication``) does the token movement
    in ``experts`` and returns the tokens' owners' output from it; its ``combine`` is then a no-op.
    """

    name: str = "abstract"
    fuses_communication: bool = False

    def __init__(self, ep_group: dist.ProcessGroup, num_local_experts: int):
        self.ep_group = ep_group
        self.ep_size = dist.get_world_size(ep_group)
        self.ep_rank = dist.get_rank(ep_group)
        self.num_local_experts = num_local_experts

    @abstractmethod
    def dispatch(
        self,
        tokens: torch.Tensor,
        routing: LocalRouting,
        counts: torch.Tensor,
        weights: ExpertWeights | None = None,
    ) -> Dispatched:
        """Send token rows towards their experts.

        Args:
            tokens: ``[T, H]`` this rank's tokens.
            routing: this rank's slots (see :mod:`comet_megatron.routing`).
            counts: ``int64 [ep, E]`` counts matrix, identical on every rank of the EP group.
            weights: the experts' weights, when known already (a fused backend may then start the experts'
                first kernel here); :meth:`experts` must then receive the same ones.
        """

    @abstractmethod
    def experts(self, dispatched: Dispatched, weights: ExpertWeights) -> torch.Tensor:
        """Run the local experts on what ``dispatch`` produced; returns what ``combine`` takes."""

    @abstractmethod
    def combine(self, expert_output: torch.Tensor, handle: Any) -> torch.Tensor:
        """Bring expert outputs back to their tokens and sum over top-k: ``[T, H]``."""
