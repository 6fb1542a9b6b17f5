"""GPT pretraining with ``--moe-comet``: Megatron's GPT pretraining loop plus Comet's MoE layers.

    torchrun --nproc-per-node 8 -m comet_megatron.megatron.pretrain <Megatron pretrain_gpt.py arguments> --moe-comet
    comet-megatron-pretrain ...   (the same, as a console script; use it under torchrun)

Megatron-LM's top-level ``pretrain_gpt.py`` is not part of any wheel; this module is the packaged
equivalent for GPT models trained from ``megatron.training`` (megatron-core >= 0.19 ships it, or
Megatron-LM on ``PYTHONPATH``): same arguments (every Megatron option plus :func:`add_comet_args`'s),
mock data (``--mock-data``) or indexed datasets (``--data-path``/``--split``) through
``BlendedMegatronDatasetBuilder``, any tokenizer Megatron builds (``--tokenizer-type NullTokenizer
--vocab-size N`` needs no files), Megatron's own model builder, optimizer, checkpointing and iteration log.
Without ``--moe-comet`` it trains exactly Megatron's model, so one command line compares the two.
Not covered: SFT, FIM and packed-sequence (THD) data, ModelOpt, cached-logit distillation.

The model side (:func:`gpt_layer_spec`, :func:`build_gpt_model`) needs only ``megatron.core``.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from functools import partial

from comet_megatron.errors import CometConfigError
from comet_megatron.megatron.args import (
    add_comet_args,
    comet_layer_spec,
    export_comet_env,
    validate_comet_args,
    with_comet_args,
)
from comet_megatron.megatron.checkpoint_guard import check_resume_across_expert_layouts

__all__ = [
    "CometGPTLayerSpec",
    "build_gpt_model",
    "gpt_layer_spec",
    "main",
    "megatron_gpt_layer_spec",
    "use_comet_layer_spec",
    "with_comet_args",
]

_NEEDS_TRAINING = (
    "comet_megatron.megatron.pretrain needs megatron.training: install megatron-core>=0.19, whose wheel ships "
    "megatron.training, or put a Megatron-LM checkout on PYTHONPATH"
)
_BATCH_KEYS = ("tokens", "labels", "loss_mask", "attention_mask", "position_ids")


# --- model (megatron.core only) -----------------------------------------------------------------------


def megatron_gpt_layer_spec(args, config, vp_stage: int | None = None):
    """The layer or decoder-block spec Megatron's GPT builder picks for ``args``/``config`` (a
    ``TransformerConfig``): ``--spec`` if given, the decoder block spec for MoE models (MoE and dense
    layers as ``moe_layer_freq`` says), else the local or Transformer Engine layer spec."""
    from megatron.core.models.gpt import gpt_layer_specs
    from megatron.core.transformer.spec_utils import import_module

    if getattr(args, "spec", None) is not None:
        return import_module(args.spec)
    for option in ("experimental_attention_variant", "heterogeneous_layers_config_path"):
        if getattr(args, option, None) is not None and getattr(args, "moe_comet", False):
            raise CometConfigError(
                f"--{option.replace('_', '-')} is not supported with --moe-comet by this entry point: build the "
                "spec yourself and rewrite it with comet_megatron.megatron.to_comet_spec"
            )
    impl = getattr(args, "transformer_impl", None) or getattr(config, "transformer_impl", "transformer_engine")
    use_te = impl == "transformer_engine"
    if config.num_moe_experts:
        return gpt_layer_specs.get_gpt_decoder_block_spec(
            config,
            use_transformer_engine=use_te,
            normalization=getattr(args, "normalization", None),
            qk_l2_norm=getattr(args, "qk_l2_norm", False),
            vp_stage=vp_stage,
        )
    if use_te:
        return gpt_layer_specs.get_gpt_layer_with_transformer_engine_spec(
            None, False, config.qk_layernorm, config.multi_latent_attention
        )
    return gpt_layer_specs.get_gpt_layer_local_spec(
        None, False, config.qk_layernorm, config.multi_latent_attention, normalization=config.normalization
    )


def gpt_layer_spec(args, config, vp_stage: int | None = None):
    """Megatron's GPT spec for ``args`` (:func:`megatron_gpt_layer_spec`), its MoE layers swapped for
    Comet's when ``args.moe_comet`` is set (after :func:`validate_comet_args`)."""
    return comet_layer_spec(args, megatron_gpt_layer_spec(args, config, vp_stage))


def _padded_vocab_size(args) -> int:
    if getattr(args, "padded_vocab_size", None):
        return args.padded_vocab_size
    multiple = getattr(args, "make_vocab_size_divisible_by", 128) * getattr(args, "tensor_model_parallel_size", 1)
    return -(-args.vocab_size // multiple) * multiple


def build_gpt_model(args, pre_process=True, post_process=True, vp_stage=None, config=None, pg_collection=None):
    """A Megatron-Core ``GPTModel`` for ``args`` with Comet's MoE layers when ``args.moe_comet`` is set.

    The signature is Megatron-LM's ``gpt_builder``'s (``config``: the ``TransformerConfig``, built by
    the caller), so this can stand in for it: ``partial(model_provider, build_gpt_model)``. The GPT
    arguments are the ones Megatron's GPT builders pass. Multi-token prediction is not built here.
    """
    from megatron.core.models.gpt import GPTModel

    if config is None:
        raise TypeError("build_gpt_model needs config=<TransformerConfig> (core_transformer_config_from_args(args))")
    if getattr(args, "mtp_num_layers", None):
        raise CometConfigError("build_gpt_model does not build multi-token prediction: unset --mtp-num-layers")
    kwargs = dict(
        config=config,
        transformer_layer_spec=gpt_layer_spec(args, config, vp_stage),
        vocab_size=_padded_vocab_size(args),
        max_sequence_length=args.max_position_embeddings,
        pre_process=pre_process,
        post_process=post_process,
        fp16_lm_cross_entropy=getattr(args, "fp16_lm_cross_entropy", False),
        parallel_output=True,
        share_embeddings_and_output_weights=not getattr(args, "untie_embeddings_and_output_weights", False),
        position_embedding_type=getattr(args, "position_embedding_type", "learned_absolute"),
        rotary_percent=getattr(args, "rotary_percent", 1.0),
        rotary_base=getattr(args, "rotary_base", 10000),
        rope_scaling=getattr(args, "use_rope_scaling", False),
        seq_len_interpolation_factor=getattr(args, "rotary_seq_len_interpolation_factor", None),
        vp_stage=vp_stage,
        pg_collection=pg_collection,
    )
    accepted = inspect.signature(GPTModel.__init__).parameters
    return GPTModel(**{k: v for k, v in kwargs.items() if k in accepted})


class CometGPTLayerSpec:
    """A ``GPTModelConfig.transformer_layer_spec`` (megatron.training >= 0.19): called by Megatron's
    ``GPTModelBuilder`` with the model config and ``vp_stage``, it returns the spec Megatron would have
    used (``base``: the ``--spec`` object, a callable like it, or ``None`` for Megatron's default) with
    its MoE layers swapped for Comet's when ``args.moe_comet`` is set.

    The checkpoint guard, the argument validation and the tuner-option export run once, here, not at every
    call (the builder calls it once per virtual pipeline stage)."""

    def __init__(self, args, base=None):
        check_resume_across_expert_layouts(args)
        validate_comet_args(args)
        export_comet_env(args)
        self.args = args
        self.base = base

    def __call__(self, model_config, vp_stage: int | None = None):
        from megatron.core.transformer.spec_utils import ModuleSpec

        from comet_megatron.megatron.spec import to_comet_spec

        base = self.base
        if base is None:
            try:
                from megatron.training.models.gpt import default_layer_spec
            except ImportError:  # megatron.core alone: the same choice, made here
                base = megatron_gpt_layer_spec(self.args, model_config.transformer, vp_stage)
            else:
                base = default_layer_spec(model_config, vp_stage)
        elif callable(base) and not isinstance(base, ModuleSpec) and not inspect.isclass(base):
            accepts_vp = "vp_stage" in inspect.signature(base).parameters
            base = base(model_config, vp_stage=vp_stage) if accepts_vp else base(model_config)
        if not getattr(self.args, "moe_comet", False):
            return base
        return to_comet_spec(base, backend=self.args.moe_comet_backend)


def use_comet_layer_spec(args, model_config):
    """With ``--moe-comet``: validate the arguments and make ``model_config`` (a ``GPTModelConfig``) build
    Comet's MoE layers. Returns ``model_config``; without the flag it is left untouched. Either way a
    ``--load`` whose distributed-optimizer state cannot cross expert layouts is refused first."""
    if getattr(args, "moe_comet", False):
        model_config.transformer_layer_spec = CometGPTLayerSpec(args, model_config.transformer_layer_spec)
    else:
        check_resume_across_expert_layouts(args)
    return model_config


# --- data, forward step and loss (megatron.training) ---------------------------------------------------


def _mtp_on_this_rank(args, vp_stage):
    from megatron.core.transformer.multi_token_prediction import mtp_on_this_rank

    if not getattr(args, "mtp_num_layers", None):
        return False
    return mtp_on_this_rank(
        layout=getattr(args, "pipeline_model_parallel_layout", None),
        mtp_num_layers=args.mtp_num_layers,
        ignore_virtual=False,
        vp_stage=vp_stage,
    )


def get_batch(data_iterator, vp_stage=None):
    """(tokens, labels, loss_mask, attention_mask, position_ids) of this rank's micro-batch: read on
    tensor-parallel rank 0, broadcast to the others, sliced for context parallelism."""
    from megatron.core import mpu
    from megatron.core.utils import get_batch_on_this_cp_rank, get_batch_on_this_tp_rank
    from megatron.training import get_args
    from megatron.training.utils import is_first_or_last_pipeline_stage

    args = get_args()
    mtp = _mtp_on_this_rank(args, vp_stage)
    if not is_first_or_last_pipeline_stage(vp_stage) and not mtp:
        return (None,) * len(_BATCH_KEYS)
    tp_rank = mpu.get_tensor_model_parallel_rank()
    batch = {}
    if tp_rank == 0:
        sample = next(data_iterator)
        batch = {key: None if sample.get(key) is None else sample[key].cuda(non_blocking=True) for key in _BATCH_KEYS}
    batch = get_batch_on_this_tp_rank(
        batch,
        has_cu_seqlens=False,
        is_hybrid_cp=False,
        create_attention_mask_in_dataloader=args.create_attention_mask_in_dataloader,
        broadcast_src_rank=mpu.get_tensor_model_parallel_src_rank(),
        broadcast_group=mpu.get_tensor_model_parallel_group(),
        cp_size=args.context_parallel_size,
        tp_rank=tp_rank,
        micro_batch_size=args.micro_batch_size,
        seq_length=args.seq_length,
        mtp_on_this_rank=mtp,
        pipeline_model_parallel_size=args.pipeline_model_parallel_size,
        is_pipeline_first_stage=mpu.is_pipeline_first_stage(),
        is_pipeline_last_stage=mpu.is_pipeline_last_stage(),
    )
    batch = get_batch_on_this_cp_rank(batch, is_hybrid_cp=False, cp_group=mpu.get_context_parallel_group())
    return tuple(batch.get(key) for key in _BATCH_KEYS)


def loss_func(loss_mask, output_tensor):
    """Sum of the masked token losses, the token count, and the ``lm loss`` report Megatron logs."""
    import torch
    from megatron.core.rerun_state_machine import get_rerun_state_machine
    from megatron.training import get_args

    args = get_args()
    losses = output_tensor.view(-1).float()
    mask = loss_mask.view(-1).float()
    loss = torch.sum(losses * mask)
    num_tokens = mask.sum().clone().detach().to(torch.int)
    report = {"lm loss": torch.cat([loss.clone().detach().view(1), num_tokens.view(1)])}
    if args.check_for_nan_in_loss_and_grad:
        machine = get_rerun_state_machine()
        for reject, what in ((torch.isnan, "NaN"), (torch.isinf, "Inf")):
            machine.validate_result(
                result=loss,
                rejection_func=reject,
                message=f"found {what} in local forward loss calculation",
                tolerance=0.0,
                fatal=True,
            )
    return loss, num_tokens, report


_LAYER_TIMERS: dict | None = None


def _attach_layer_timers(model) -> None:
    """``COMET_LAYER_TIMING=N``: time every MoE layer and attention call in situ (layer_timing.py), once."""
    global _LAYER_TIMERS
    if _LAYER_TIMERS is not None:
        return
    from comet_megatron.megatron import layer_timing
    from comet_megatron.timing import process_rank

    every = layer_timing.report_interval()
    _LAYER_TIMERS = layer_timing.attach_timers(model, every, process_rank()) if every else {}


def forward_step(data_iterator, model, return_schedule_plan: bool = False):
    """One micro-batch forward; returns the per-token losses and the loss function."""
    from megatron.core.utils import get_attr_wrapped_model
    from megatron.training import get_timers

    if return_schedule_plan:
        raise CometConfigError("--overlap-moe-expert-parallel-comm is not supported by this entry point")
    _attach_layer_timers(model)
    timers = get_timers()
    timers("batch-generator", log_level=2).start()
    vp_stage = get_attr_wrapped_model(model, "vp_stage")
    tokens, labels, loss_mask, attention_mask, position_ids = get_batch(data_iterator, vp_stage)
    timers("batch-generator").stop()
    output_tensor = model(tokens, position_ids, attention_mask, labels=labels, loss_mask=loss_mask)
    return output_tensor, partial(loss_func, loss_mask)


def _dataset_config(args):
    from megatron.core.datasets.gpt_dataset import GPTDatasetConfig
    from megatron.core.tokenizers.utils.build_tokenizer import build_tokenizer
    from megatron.training.utils import get_blend_and_blend_per_split

    blend, blend_per_split = get_blend_and_blend_per_split(args)
    values = dict(
        random_seed=args.seed,
        sequence_length=args.seq_length,
        blend=blend,
        blend_per_split=blend_per_split,
        split=args.split,
        multiple_validation_sets=args.multiple_validation_sets,
        full_validation=args.full_validation,
        num_dataset_builder_threads=args.num_dataset_builder_threads,
        path_to_cache=args.data_cache_path,
        mmap_bin_files=args.mmap_bin_files,
        tokenizer=build_tokenizer(args),
        reset_position_ids=args.reset_position_ids,
        reset_attention_mask=args.reset_attention_mask,
        eod_mask_loss=args.eod_mask_loss,
        create_attention_mask=args.create_attention_mask_in_dataloader,
        object_storage_cache_path=getattr(args, "object_storage_cache_path", None),
        mid_level_dataset_surplus=args.mid_level_dataset_surplus,
        allow_ambiguous_pad_tokens=getattr(args, "allow_ambiguous_pad_tokens", False),
        context_parallel_size=args.context_parallel_size,
        data_parallel_size=args.data_parallel_size,
        sequence_parallel_size=args.tensor_model_parallel_size * args.sequence_parallel,
    )
    fields = {f.name for f in dataclasses.fields(GPTDatasetConfig)}
    return GPTDatasetConfig(**{k: v for k, v in values.items() if k in fields})


def _dataset_built_on_rank(vp_stage=None):
    from megatron.core import mpu
    from megatron.training import get_args
    from megatron.training.utils import is_first_or_last_pipeline_stage

    if mpu.get_tensor_model_parallel_rank() != 0:
        return False
    return is_first_or_last_pipeline_stage(vp_stage) or _mtp_on_this_rank(get_args(), vp_stage)


def train_valid_test_datasets_provider(train_val_test_num_samples, vp_stage=None):
    """Mock GPT data with ``--mock-data``, else Megatron's indexed GPT datasets (``--data-path``...)."""
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, MockGPTDataset
    from megatron.training import get_args, print_rank_0

    args = get_args()
    if getattr(args, "sft", False) or getattr(args, "fim_data", False):
        raise CometConfigError("--sft / --fim-data are not supported by comet-megatron-pretrain: use pretrain_gpt.py")
    dataset_type = MockGPTDataset if args.mock_data else GPTDataset
    print_rank_0("> building train, validation, and test datasets for GPT ...")
    datasets = BlendedMegatronDatasetBuilder(
        dataset_type,
        train_val_test_num_samples,
        partial(_dataset_built_on_rank, vp_stage=vp_stage),
        _dataset_config(args),
    ).build()
    print_rank_0("> finished creating GPT datasets ...")
    return datasets


train_valid_test_datasets_provider.is_distributed = True


def get_embedding_ranks(pp_ranks):
    """The pipeline ranks holding word embeddings: the first stage, the last one when tied, MTP stages."""
    from megatron.core.transformer.multi_token_prediction import get_mtp_ranks
    from megatron.training import get_args
    from megatron.training.arguments import core_transformer_config_from_args

    ranks = {pp_ranks[0]}
    if len(pp_ranks) > 1:
        args = get_args()
        if not args.untie_embeddings_and_output_weights:
            ranks.add(pp_ranks[-1])
        ranks.update(get_mtp_ranks(pp_ranks, core_transformer_config_from_args(args)))
    return sorted(ranks)


# --- entry point ------------------------------------------------------------------------------------


def _import_training():
    try:
        from megatron.core.enums import ModelType
        from megatron.training import pretrain
        from megatron.training.argument_utils import gpt_config_from_args, pretrain_cfg_container_from_args
        from megatron.training.arguments import parse_and_validate_args
    except ImportError as exc:
        raise SystemExit(f"{_NEEDS_TRAINING} ({exc})") from exc
    return ModelType, pretrain, gpt_config_from_args, pretrain_cfg_container_from_args, parse_and_validate_args


def use_prebuilt_dataset_helpers() -> bool:
    """Let Megatron's initialization use the dataset helpers a megatron-core wheel ships prebuilt.

    ``megatron.training``'s initialization always runs ``make`` in ``megatron/core/datasets`` and exits
    when it fails; the wheels ship ``helpers_cpp`` compiled but not the Makefile, so training from the
    wheel stops there. When there is no Makefile and the built module imports, compilation is skipped.
    Returns whether it was."""
    import importlib
    import os

    from megatron.core.datasets import utils

    if os.path.exists(os.path.join(os.path.dirname(utils.__file__), "Makefile")):
        return False  # a source checkout: Megatron builds (or rebuilds) the helpers itself
    try:
        importlib.import_module("megatron.core.datasets.helpers_cpp")
    except ImportError:
        return False  # neither buildable nor built: Megatron's own error says so
    utils.compile_helpers = lambda: None
    return True


def main(argv: list[str] | None = None) -> None:
    """Parse Megatron's arguments plus Comet's, validate them, and run Megatron's ``pretrain``."""
    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    ModelType, pretrain, gpt_config_from_args, pretrain_cfg_container_from_args, parse_and_validate_args = (
        _import_training()
    )
    args = parse_and_validate_args(
        extra_args_provider=add_comet_args, args_defaults={"tokenizer_type": "GPT2BPETokenizer"}
    )
    use_prebuilt_dataset_helpers()
    model_config = use_comet_layer_spec(args, gpt_config_from_args(args))
    pretrain(
        pretrain_cfg_container_from_args(args, model_config),
        train_valid_test_datasets_provider,
        ModelType.encoder_or_decoder,
        forward_step,
        get_embedding_ranks=get_embedding_ranks,
    )


if __name__ == "__main__":
    main()
