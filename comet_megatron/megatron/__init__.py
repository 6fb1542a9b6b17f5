"""Megatron-Core integration: layer, dispatcher, experts and spec helpers."""

try:
    import megatron.core  # noqa: F401

    HAVE_MEGATRON = True
except ImportError as exc:  # pragma: no cover - exercised only without megatron-core
    raise ImportError(
        "comet_megatron.megatron needs megatron-core>=0.16.1, which is not importable "
        f"({exc}). Install it with: pip install 'megatron-core>=0.16.1'"
    ) from exc

from comet_megatron.megatron.dispatcher import CometTokenDispatcher
from comet_megatron.megatron.experts import CometGroupedMLP
from comet_megatron.megatron.layer import CometMoELayer
from comet_megatron.megatron.spec import get_comet_moe_module_spec, to_comet_spec

__all__ = [
    "HAVE_MEGATRON",
    "CometGroupedMLP",
    "CometMoELayer",
    "CometTokenDispatcher",
    "get_comet_moe_module_spec",
    "to_comet_spec",
]
