"""Spec helpers: build Comet MoE specs, or rewrite any GPT layer/block spec to use Comet.

Megatron-Core 0.16 describes MoE MLPs as ``ModuleSpec(module=MoELayer, submodules=MoESubmodules(...))``;
0.19 as ``functools.partial(MoELayer, submodules=...)``. Both are recognised; the rewritten MoE MLP is
always a ``ModuleSpec``, which both versions build (``ModuleSpec.__call__`` builds the module).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect

from megatron.core.models.gpt.moe_module_specs import get_moe_module_spec
from megatron.core.transformer.moe.moe_layer import MoELayer
from megatron.core.transformer.spec_utils import ModuleSpec

from comet_megatron.backends.selection import BACKEND_CHOICES
from comet_megatron.errors import CometConfigError
from comet_megatron.megatron.experts import CometGroupedMLP
from comet_megatron.megatron.layer import CometMoELayer


def _check_backend(backend: str) -> None:
    if backend not in BACKEND_CHOICES:
        raise CometConfigError(f"comet backend {backend!r} is unknown: choose one of {', '.join(BACKEND_CHOICES)}")


def _moe_layer_submodules(spec):
    """The ``MoESubmodules`` of an MoE MLP spec in either style, or ``None`` for anything else."""
    if isinstance(spec, ModuleSpec) and inspect.isclass(spec.module) and issubclass(spec.module, MoELayer):
        return spec.submodules
    if (
        isinstance(spec, functools.partial)
        and inspect.isclass(spec.func)
        and issubclass(spec.func, MoELayer)
        and "submodules" in spec.keywords
    ):
        return spec.keywords["submodules"]
    return None


def _comet_moe_spec(moe_spec, backend: str) -> ModuleSpec:
    submodules = dataclasses.replace(copy.deepcopy(_moe_layer_submodules(moe_spec)), experts=CometGroupedMLP)
    metainfo = copy.deepcopy(getattr(moe_spec, "metainfo", None) or {})
    return ModuleSpec(module=CometMoELayer, submodules=submodules, params={"backend": backend}, metainfo=metainfo)


def get_comet_moe_module_spec(
    use_te: bool | None = True,
    num_experts: int | None = None,
    moe_grouped_gemm: bool | None = True,
    backend: str = "auto",
    **megatron_kwargs,
) -> ModuleSpec:
    """Drop-in for Megatron's ``get_moe_module_spec``: same router and shared experts, Comet's layer,
    dispatcher and experts. ``megatron_kwargs`` go to the installed ``get_moe_module_spec``."""
    _check_backend(backend)
    base = get_moe_module_spec(
        use_te=use_te, num_experts=num_experts, moe_grouped_gemm=moe_grouped_gemm, **megatron_kwargs
    )
    return _comet_moe_spec(base, backend)


def to_comet_spec(spec, backend: str = "auto"):
    """Return a copy of ``spec`` whose MoE MLPs use Comet; dense MLPs and everything else untouched.

    Accepts an MoE MLP spec, a transformer-layer spec (``ModuleSpec`` or ``partial`` whose submodules
    have ``mlp``), a ``TransformerBlockSubmodules`` (``layer_specs``), or a list of layer specs. The
    input is never modified: specs are often shared between layers and models.
    """
    _check_backend(backend)
    return _rewrite(copy.deepcopy(spec), backend)


def _rewrite(spec, backend: str):
    if _moe_layer_submodules(spec) is not None:
        if isinstance(spec, ModuleSpec) and spec.module is CometMoELayer:
            spec.params = {**spec.params, "backend": backend}
            return spec
        return _comet_moe_spec(spec, backend)
    if isinstance(spec, (list, tuple)):
        return type(spec)(_rewrite(s, backend) for s in spec)
    layer_specs = getattr(spec, "layer_specs", None)
    if isinstance(layer_specs, (list, tuple)):
        spec.layer_specs = _rewrite(layer_specs, backend)
        return spec
    submodules = _layer_submodules(spec)
    if submodules is not None and hasattr(submodules, "mlp"):
        submodules.mlp = _rewrite(submodules.mlp, backend)
    return spec


def _layer_submodules(spec):
    if isinstance(spec, ModuleSpec):
        return spec.submodules
    if isinstance(spec, functools.partial):
        return spec.keywords.get("submodules")
    return None
