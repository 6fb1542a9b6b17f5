"""comet-megatron: COMET fine-grained computation/communication overlap for Megatron-Core MoE layers.

The Megatron integration lives in :mod:`comet_megatron.megatron` (imported on first use, so that
``import comet_megatron`` has no side effects and does not need megatron-core).
"""

from __future__ import annotations

__version__ = "0.1.0"

_MEGATRON_EXPORTS = (
    "CometGroupedMLP",
    "CometMoELayer",
    "CometTokenDispatcher",
    "get_comet_moe_module_spec",
    "to_comet_spec",
)

__all__ = ["__version__", *_MEGATRON_EXPORTS]


def __getattr__(name: str):
    if name in _MEGATRON_EXPORTS:
        from comet_megatron import megatron as _integration

        return getattr(_integration, name)
    raise AttributeError(f"module 'comet_megatron' has no attribute {name!r}")
