"""CometMoELayer: Megatron's MoELayer with Comet's dispatcher and backend.

Router, aux losses, shared experts, recompute and the forward orchestration stay Megatron's; only the
token dispatcher is replaced (after ``super().__init__()``), and the experts — ``CometGroupedMLP``
from the spec — are bound to it so that a fused backend can move tokens inside the expert GEMMs.
"""

from __future__ import annotations

import inspect

from megatron.core.transformer.moe.moe_layer import MoELayer
from megatron.core.transformer.moe.moe_utils import get_default_pg_collection

from comet_megatron.backends.selection import create_backend
from comet_megatron.errors import CometConfigError
from comet_megatron.megatron.dispatcher import CometTokenDispatcher
from comet_megatron.megatron.experts import CometGroupedMLP
from comet_megatron.megatron.validation import validate_moe_config
from comet_megatron.ops.deferred_wgrad import wgrad_defer_depth

_MOE_LAYER_KWARGS = frozenset(inspect.signature(MoELayer.__init__).parameters) - {"self"}


class CometMoELayer(MoELayer):
    """Drop-in replacement for ``MoELayer``.

    Args:
        config: Megatron ``TransformerConfig`` (validated at construction).
        submodules: ``MoESubmodules``; experts should be :class:`CometGroupedMLP` (required by the
            fused backend; Megatron's experts work with the reference backend).
        layer_number, pg_collection: as for ``MoELayer``.
        backend: ``"auto"`` | ``"fused"`` | ``"reference"``.
        **kwargs: forwarded to ``MoELayer`` when its installed version accepts them
            (``is_mtp_layer``, ``name`` in Megatron-Core >= 0.19).
    """

    def __init__(self, config, submodules=None, layer_number=None, pg_collection=None, backend: str = "auto", **kwargs):
        if pg_collection is None:
            pg_collection = get_default_pg_collection()
        validate_moe_config(config, pg_collection)  # MoELayer's own asserts carry no message
        super_kwargs = {k: v for k, v in kwargs.items() if k in _MOE_LAYER_KWARGS}
        super().__init__(
            config=config, submodules=submodules, layer_number=layer_number, pg_collection=pg_collection, **super_kwargs
        )
        self.comet_backend = create_backend(backend, config, self.ep_group, self.num_local_experts)
        if wgrad_defer_depth() > 0:  # deferred weight gradients must be in main_grad before Megatron's DDP reduces it
            from comet_megatron.megatron.ddp_drain import install_deferred_wgrad_drain

            install_deferred_wgrad_drain()
        self.token_dispatcher = CometTokenDispatcher(
            self.num_local_experts,
            self.local_expert_indices,
            config=config,
            pg_collection=pg_collection,
            backend=self.comet_backend,
        )
        if hasattr(self, "_training_token_dispatcher"):  # Megatron >= 0.19 restores it in forward()
            self._training_token_dispatcher = self.token_dispatcher
        if isinstance(self.experts, CometGroupedMLP):
            self.experts.bind_dispatcher(self.token_dispatcher)
        elif self.comet_backend.fuses_communication:
            raise CometConfigError(
                f"the fused backend needs CometGroupedMLP experts, got {type(self.experts).__name__}: "
                "build the layer with get_comet_moe_module_spec() or to_comet_spec()"
            )
