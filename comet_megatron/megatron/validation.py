"""Construction-time checks: configurations Comet cannot run fail here, never with wrong numbers."""

from __future__ import annotations

from megatron.core import utils as mcore_utils

from comet_megatron.errors import CometConfigError
from comet_megatron.ops.grouped_linear import check_wgrad_environment

SUPPORTED_CONFIG_DISPATCHERS = ("alltoall", "allgather")


def validate_moe_config(config, pg_collection) -> None:
    """Raise :class:`CometConfigError` listing every unsupported option of ``config``."""
    problems: list[str] = []
    ep_size = mcore_utils.get_pg_size(pg_collection.ep)
    num_experts = config.num_moe_experts
    if not num_experts:
        problems.append("num_moe_experts is not set: CometMoELayer only replaces MoE layers")
    elif num_experts % ep_size:
        problems.append(
            f"num_moe_experts={num_experts} is not divisible by the expert-parallel size {ep_size} "
            "(--expert-model-parallel-size): choose an EP size that divides the number of experts"
        )
    expert_tp = mcore_utils.get_pg_size(pg_collection.expt_tp)
    if expert_tp != 1:
        problems.append(
            f"expert tensor parallelism ({expert_tp}) is not supported: set expert_tensor_parallel_size=1 "
            "(--expert-tensor-parallel-size 1)"
        )
    if config.moe_expert_capacity_factor is not None:
        problems.append(
            f"moe_expert_capacity_factor={config.moe_expert_capacity_factor} (token dropping) is not "
            "supported: Comet is dropless; unset --moe-expert-capacity-factor"
        )
    if getattr(config, "moe_pad_expert_input_to_capacity", False):
        problems.append("moe_pad_expert_input_to_capacity is not supported: unset --moe-pad-expert-input-to-capacity")
    if getattr(config, "moe_router_padding_for_quantization", False):
        problems.append("moe_router_padding_for_quantization is not supported: unset it")
    if config.add_bias_linear:
        problems.append("expert biases are not supported: set add_bias_linear=False (--disable-bias-linear)")
    if getattr(config, "fp8", None) or getattr(config, "fp4", None):
        problems.append(
            "fp8/fp4 expert GEMMs are not supported: train the experts in bf16 (drop --fp8-format/--fp4-format)"
        )
    if getattr(config, "moe_latent_size", None):
        problems.append("MoE latent projections (moe_latent_size) are not supported: unset --moe-latent-size")
    if config.moe_shared_expert_overlap:
        problems.append(
            "moe_shared_expert_overlap is not supported (Comet overlaps the experts' own communication): "
            "unset --moe-shared-expert-overlap; shared experts still run"
        )
    for option in ("overlap_dispatch_backward_with_experts_wgrad", "delay_wgrad_compute"):
        if getattr(config, option, False):  # fields of recent Megatron-Core; both defer the experts' weight gradients
            problems.append(
                f"{option} is not supported: Comet computes the experts' weight gradients inside its fused "
                f"backward; unset --{option.replace('_', '-')}"
            )
    if getattr(config, "moe_apply_probs_on_input", False):
        problems.append("moe_apply_probs_on_input is not supported: unset --moe-apply-probs-on-input")
    if config.moe_token_dispatcher_type not in SUPPORTED_CONFIG_DISPATCHERS:
        problems.append(
            f"moe_token_dispatcher_type={config.moe_token_dispatcher_type!r}: Megatron builds that dispatcher "
            "before Comet replaces it; set --moe-token-dispatcher-type alltoall"
        )
    cuda_graph_problem = _cuda_graph_problem(config)
    if cuda_graph_problem:
        problems.append(cuda_graph_problem)
    try:
        check_wgrad_environment()
    except ValueError as exc:
        problems.append(str(exc))
    if problems:
        raise CometConfigError("CometMoELayer cannot run this configuration:\n- " + "\n- ".join(problems))


def _cuda_graph_problem(config) -> str | None:
    """CUDA graphs may capture attention and Megatron's router, never Comet's dispatch: its preprocess keeps the
    routing on the dispatcher between stages and the fused path reads the routing counts on the host."""
    impl = getattr(config, "cuda_graph_impl", None) or "none"
    if getattr(config, "enable_cuda_graph", False):  # deprecated spellings of the implementation
        impl = "local"
    elif getattr(config, "external_cuda_graph", False):
        impl = "transformer_engine"
    if impl == "none":
        return None
    # Megatron-Core >= 0.19 names them cuda_graph_modules, 0.16 cuda_graph_scope; enums in a config, strings in args
    option = "--cuda-graph-modules" if hasattr(config, "cuda_graph_modules") else "--cuda-graph-scope"
    modules = getattr(config, "cuda_graph_modules", None)
    if modules is None:
        modules = getattr(config, "cuda_graph_scope", None)
    if modules is None or isinstance(modules, str) or not hasattr(modules, "__iter__"):
        modules = [] if modules is None else str(getattr(modules, "name", modules)).split(",")
    names = {str(getattr(m, "name", m)).strip() for m in modules} - {"", "full"}  # "full": the whole layer
    if impl == "local" and "moe_router" in names:
        names.add("moe_preprocess")  # Megatron's local implementation captures both together
    if impl == "full_iteration" or "full_iteration" in names:
        captured = "the whole training iteration"
    elif not names:
        captured = "whole transformer layers (no modules named)"
    elif "moe" in names:
        captured = "the MoE layers"
    elif "moe_preprocess" in names:
        captured = "the MoE preprocess (" + (
            "which the local implementation adds to moe_router)" if impl == "local" else "moe_preprocess)"
        )
    else:
        return None
    return (
        f"CUDA graphs that capture {captured} are not supported (--cuda-graph-impl {impl}, {option} "
        f"{' '.join(sorted(names)) or '<whole layer>'}): Comet's dispatch keeps its routing state between stages "
        "outside the graph and reads the routing counts on the host. Capture attention and the router only "
        f"(--cuda-graph-impl transformer_engine {option} attn moe_router) or use --cuda-graph-impl none"
    )
