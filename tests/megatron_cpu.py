"""Test-only shims that let Megatron-Core's own MoELayer run on CPU/gloo (never used by the package).

Megatron-Core assumes CUDA in four places that matter for its MoE layer:
1. ``torch.cuda.current_device()`` as the device of new tensors        -> the CPU device
2. ``torch.cuda.Stream/Event/current_stream/stream`` in the dispatcher -> no-op stand-ins
3. megatron-core 0.16.1 leaves ``te_general_gemm``/``fused_*`` undefined in ``moe_utils`` without
   Transformer Engine                                                  -> set them to None
4. the alltoall dispatcher's ``maybe_move_tensor_to_cpu(as_numpy=True)`` returns a tensor for CPU
   tensors, which gloo's ``all_to_all_single`` rejects as split sizes    -> return numpy
"""

from __future__ import annotations

import contextlib

import torch

_applied = False


class _FakeStream:
    def __init__(self, *args, **kwargs):
        pass

    def wait_stream(self, *args, **kwargs):
        pass

    def wait_event(self, *args, **kwargs):
        pass

    def record_event(self, *args, **kwargs):
        return _FakeEvent()

    def synchronize(self):
        pass


class _FakeEvent:
    def __init__(self, *args, **kwargs):
        pass

    def record(self, *args, **kwargs):
        pass

    def wait(self, *args, **kwargs):
        pass

    def synchronize(self):
        pass


def apply_cpu_shims() -> None:
    """Idempotently patch torch.cuda / megatron for a CPU-only process."""
    global _applied
    if _applied:
        return
    _applied = True
    torch.cuda.current_device = lambda: torch.device("cpu")
    torch.cuda.Stream = _FakeStream
    torch.cuda.Event = _FakeEvent
    torch.cuda.current_stream = lambda *a, **k: _FakeStream()
    torch.cuda.stream = lambda *a, **k: contextlib.nullcontext()

    from megatron.core.transformer.moe import moe_utils, token_dispatcher

    for name in (
        "te_general_gemm",
        "fused_compute_score_for_moe_aux_loss",
        "fused_moe_aux_loss",
        "fused_permute",
        "fused_permute_with_probs",
        "fused_sort_chunks_by_index",
        "fused_sort_chunks_by_index_with_probs",
        "fused_topk_with_score_function",
        "fused_unpermute",
    ):
        if not hasattr(moe_utils, name):
            setattr(moe_utils, name, None)

    original = moe_utils.maybe_move_tensor_to_cpu

    def maybe_move_tensor_to_cpu(tensor, as_numpy=False, record_stream=False):
        if torch.is_tensor(tensor) and not tensor.is_cuda:
            return tensor.numpy() if as_numpy else tensor
        return original(tensor, as_numpy=as_numpy, record_stream=record_stream)

    moe_utils.maybe_move_tensor_to_cpu = maybe_move_tensor_to_cpu
    token_dispatcher.maybe_move_tensor_to_cpu = maybe_move_tensor_to_cpu


def apply_cpu_checkpoint_shims() -> None:
    """``dist_checkpointing.save`` on CPU: ``FileSystemWriterAsync.preload_tensors`` calls
    ``torch.cuda.synchronize()`` unconditionally, and reads the process memory through psutil."""
    import importlib.util

    torch.cuda.synchronize = lambda *args, **kwargs: None
    if importlib.util.find_spec("psutil") is None:
        from megatron.core.dist_checkpointing.strategies import filesystem_async

        filesystem_async._process_memory = lambda: 0


def apply_cpu_optimizer_shims() -> None:
    """Megatron's DDP and (distributed) optimizer on CPU: a few tensors are created on ``"cuda"``
    unconditionally (found-inf flags, dummy overflow buffers, ``Tensor.cuda()`` in the state-dict gathers),
    and parameters are accepted only if ``Tensor.type()`` names a CUDA type. Maps both to the CPU."""
    import functools

    if getattr(torch, "_comet_cpu_optimizer_shims", False):
        return
    torch._comet_cpu_optimizer_shims = True
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    original_type = torch.Tensor.type

    def cuda_type_name(self, dtype=None, non_blocking=False, **kwargs):
        if dtype is None:
            name = original_type(self)
            return name if name.startswith("torch.cuda.") else name.replace("torch.", "torch.cuda.", 1)
        return original_type(self, dtype, non_blocking, **kwargs)

    torch.Tensor.type = cuda_type_name

    def on_cpu(factory):
        @functools.wraps(factory)
        def wrapper(*args, **kwargs):
            if str(kwargs.get("device", "")).startswith("cuda"):
                kwargs["device"] = "cpu"
            return factory(*args, **kwargs)

        return wrapper

    for name in ("tensor", "zeros", "ones", "empty", "empty_like", "zeros_like", "full", "arange"):
        setattr(torch, name, on_cpu(getattr(torch, name)))


def moe_test_config(**fields):
    """A small MoE ``TransformerConfig`` for CPU tests: one layer, alltoall dispatcher, SwiGLU experts without
    biases or fused bias-activation, fp32 weights initialized on the CPU, no load-balancing loss. ``fields`` set
    the sizes and override any of these."""
    import torch.nn.functional as F
    from megatron.core.transformer.transformer_config import TransformerConfig

    kwargs = dict(
        num_layers=1,
        moe_token_dispatcher_type="alltoall",
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        bias_activation_fusion=False,
        params_dtype=torch.float32,
        use_cpu_initialization=True,
        moe_router_load_balancing_type="none",
    )
    kwargs.update(fields)
    return TransformerConfig(**kwargs)


def pipeline_gpt_config(**fields):
    """A small GPT ``TransformerConfig`` split over 2 pipeline stages for CPU tests: :func:`moe_test_config`'s SwiGLU
    experts in 4 layers (4 experts, top-2, aux-loss balancing), no dropout, fp32 on the CPU. ``fields`` override any
    of these (e.g. ``moe_layer_freq``, the dtypes)."""
    kwargs = dict(
        num_layers=4,
        hidden_size=32,
        ffn_hidden_size=48,
        num_attention_heads=4,
        num_moe_experts=4,
        moe_router_topk=2,
        moe_ffn_hidden_size=24,
        moe_router_load_balancing_type="aux_loss",
        moe_aux_loss_coeff=1e-2,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        pipeline_model_parallel_size=2,
        pipeline_dtype=torch.float32,
    )
    kwargs.update(fields)
    return moe_test_config(**kwargs)


def build_stage_gpt(config, transformer_layer_spec, vocab_size: int, max_sequence_length: int):
    """This pipeline stage's part of a ``GPTModel`` (embedding on the first stage, output layer on the last)."""
    from megatron.core import parallel_state as ps
    from megatron.core.models.gpt import GPTModel

    return GPTModel(
        config=config,
        transformer_layer_spec=transformer_layer_spec,
        vocab_size=vocab_size,
        max_sequence_length=max_sequence_length,
        pre_process=ps.is_pipeline_first_stage(),
        post_process=ps.is_pipeline_last_stage(),
    )
