"""Expert activation with the router probability applied, exactly where Megatron applies it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ExpertActivation:
    """What happens between fc1 and fc2 of an expert (Megatron's ``MLP`` semantics).

    Attributes:
        func: elementwise activation (``F.silu`` for SwiGLU).
        gated: GLU: fc1 produces ``[gate | linear]`` halves and the result is
            ``func(gate) * (linear + linear_offset)``.
        linear_offset: Megatron's ``glu_linear_offset``.
        clamp: Megatron's ``activation_func_clamp_value`` (gate clamped above, linear both sides).
    """

    func: Callable[[torch.Tensor], torch.Tensor]
    gated: bool
    linear_offset: float = 0.0
    clamp: float | None = None

    @classmethod
    def from_config(cls, config) -> ExpertActivation:
        return cls(
            func=config.activation_func,
            gated=bool(config.gated_linear_unit),
            linear_offset=float(getattr(config, "glu_linear_offset", 0.0) or 0.0),
            clamp=getattr(config, "activation_func_clamp_value", None),
        )

    def __call__(self, fc1_out: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """``[N, (2)F], [N] -> [N, F]``: activation, then scaled by the router probability.

        The product with ``probs`` is taken in the promoted dtype and cast back to the activation's
        dtype, as Megatron's MLP does with ``per_token_scale``.
        """
        if self.gated:
            gate, linear = torch.chunk(fc1_out, 2, dim=-1)
            if self.clamp is not None:
                gate = gate.clamp(min=None, max=self.clamp)
                linear = linear.clamp(min=-self.clamp, max=self.clamp)
            act = self.func(gate) * (linear + self.linear_offset if self.linear_offset else linear)
        else:
            act = self.func(fc1_out)
        return (act * probs.unsqueeze(-1)).to(act.dtype)
