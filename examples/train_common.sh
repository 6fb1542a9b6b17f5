# Shared launcher of the MoE training examples (sourced by mixtral_8x7b*.sh, qwen2_57b_a14b*.sh and
# qwen3_30b_a3b*.sh, which set MODEL_ARGS and the defaults below first). Megatron's GPT pretraining through comet-megatron's entry point
# (python -m comet_megatron.megatron.pretrain = Megatron's pretrain_gpt.py + --moe-comet), with the flags of
# the measured Megatron-LM anchor (../shared/bench/e2e_megatron_lm.sh there): local transformer impl, no TE.
#
# Environment (all optional):
#   COMET=1|0           1: --moe-comet (Comet's MoE layers); 0: Megatron's alltoall dispatcher and experts
#   BACKEND=auto        --moe-comet-backend: auto | fused | reference
#   EP TP PP            expert / tensor / pipeline parallel sizes (expert TP is always 1; TP > 1 adds
#                       --sequence-parallel, which Megatron's MoE layers need in training)
#   NPROC NNODES NODE_RANK MASTER_ADDR MASTER_PORT   torchrun layout (GPUs per node, nodes)
#   LAYERS SEQ MBS GBS ITERS LR SEED VOCAB           model depth and training schedule
#   MOE_FREQ            --moe-layer-freq: 1 (all MoE), 2 (alternate MoE/dense), or a list like "[1,0,1,0]"
#   WGRAD_DEFER=N       --moe-comet-wgrad-defer: run each MoE layer's expert weight gradients N MoE layers later in
#                       the backward pass (default 0; at EP > 1 they pair with another layer's routing imbalance)
#   WGRAD_CARRY=1       --moe-comet-wgrad-carry: what is still deferred when a backward ends runs in the next forward
#   RECOMPUTE=1         recompute the MoE layers in backward (--recompute-granularity selective --recompute-modules moe)
#   SAVE LOAD SAVE_INTERVAL   dist-checkpoint folder to write / to resume from, and how often to save; to resume
#                       across COMET=0 and COMET=1 save with EXTRA=--dist-ckpt-optim-fully-reshardable, or
#                       resume with EXTRA=--no-load-optim (README, Checkpoints)
#   DATA_PATH TOKENIZER_TYPE TOKENIZER_MODEL   real data; without DATA_PATH: --mock-data + NullTokenizer
#   IMPL=local          --transformer-impl (transformer_engine where TE is installed; then GROUPED_GEMM=1 helps
#                       Megatron's experts)
#   LOG=path            also write the output to this file
#   EXTRA="..."         more Megatron arguments, appended last
set -euo pipefail

export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export CUDA_DEVICE_MAX_CONNECTIONS=1 PYTHONUNBUFFERED=1
# Comet's symmetric workspace lives in NVSHMEM's heap, fixed when NVSHMEM starts (default 1 GiB; the
# Qwen2-57B shapes need about 1 GiB, and the buffer grows with the largest batch seen).
export NVSHMEM_SYMMETRIC_SIZE=${NVSHMEM_SYMMETRIC_SIZE:-8G}

COMET=${COMET:-1}
BACKEND=${BACKEND:-auto}
EP=${EP:-$DEFAULT_EP}
TP=${TP:-$DEFAULT_TP}
PP=${PP:-$DEFAULT_PP}
NPROC=${NPROC:-$DEFAULT_NPROC}
NNODES=${NNODES:-$DEFAULT_NNODES}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-localhost}
MASTER_PORT=${MASTER_PORT:-29500}
LAYERS=${LAYERS:-$DEFAULT_LAYERS}
SEQ=${SEQ:-4096}
MBS=${MBS:-1}
GBS=${GBS:-$DEFAULT_GBS}
ITERS=${ITERS:-$DEFAULT_ITERS}
LR=${LR:-1e-4}
SEED=${SEED:-1234}
VOCAB=${VOCAB:-$DEFAULT_VOCAB}
MOE_FREQ=${MOE_FREQ:-1}
RECOMPUTE=${RECOMPUTE:-0}
IMPL=${IMPL:-local}
GROUPED_GEMM=${GROUPED_GEMM:-0}

ARGS=(
  --transformer-impl "$IMPL"
  --num-layers "$LAYERS" "${MODEL_ARGS[@]}"
  --seq-length "$SEQ" --max-position-embeddings "$SEQ"
  --position-embedding-type rope --rotary-base 1000000 --normalization RMSNorm --swiglu
  --disable-bias-linear --untie-embeddings-and-output-weights --init-method-std 0.01
  --attention-dropout 0.0 --hidden-dropout 0.0
  --moe-layer-freq "$MOE_FREQ"
  --moe-router-load-balancing-type aux_loss --moe-aux-loss-coeff "${AUX_LOSS_COEFF:-1e-2}"
  --moe-token-dispatcher-type alltoall
  --tensor-model-parallel-size "$TP" --pipeline-model-parallel-size "$PP"
  --expert-model-parallel-size "$EP" --expert-tensor-parallel-size 1
  --micro-batch-size "$MBS" --global-batch-size "$GBS" --train-iters "$ITERS" --lr "$LR" --min-lr 1e-5
  --lr-decay-style cosine --lr-warmup-iters 2 --weight-decay 0.1 --clip-grad 1.0 --bf16
  --use-distributed-optimizer
  --log-interval 1 --log-throughput --eval-iters 0 --eval-interval 100000 --seed "$SEED"
)
if [ "$IMPL" = local ]; then  # no TE/apex: Megatron's fused kernels are unavailable
  ARGS+=(--attention-backend unfused --no-masked-softmax-fusion --no-rope-fusion
         --no-gradient-accumulation-fusion --no-persist-layer-norm)
fi
# Megatron's MoE layers refuse to train with attention TP > 1 without sequence parallelism
[ "$TP" -gt 1 ] && ARGS+=(--sequence-parallel)
[ "$GROUPED_GEMM" = 1 ] && ARGS+=(--moe-grouped-gemm)
[ "$COMET" = 1 ] && ARGS+=(--moe-comet --moe-comet-backend "$BACKEND")
[ "$COMET" = 1 ] && [ -n "${WGRAD_DEFER:-}" ] && ARGS+=(--moe-comet-wgrad-defer "$WGRAD_DEFER")
[ "$COMET" = 1 ] && [ "${WGRAD_CARRY:-0}" = 1 ] && ARGS+=(--moe-comet-wgrad-carry)
[ "$RECOMPUTE" = 1 ] && ARGS+=(--recompute-granularity selective --recompute-modules moe)
if [ -n "${DATA_PATH:-}" ]; then
  ARGS+=(--data-path $DATA_PATH --split 99990,8,2 --tokenizer-type "${TOKENIZER_TYPE:?set TOKENIZER_TYPE}")
  [ -n "${TOKENIZER_MODEL:-}" ] && ARGS+=(--tokenizer-model "$TOKENIZER_MODEL")
else
  ARGS+=(--mock-data --tokenizer-type NullTokenizer --vocab-size "$VOCAB" --split 99,1,0)
fi
[ -n "${SAVE:-}" ] && ARGS+=(--save "$SAVE" --save-interval "${SAVE_INTERVAL:-$ITERS}")
[ -n "${LOAD:-}" ] && ARGS+=(--load "$LOAD")
# shellcheck disable=SC2206
[ -n "${EXTRA:-}" ] && ARGS+=($EXTRA)

LAUNCH=(torchrun --nproc-per-node "$NPROC" --nnodes "$NNODES" --node-rank "$NODE_RANK"
        --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT" -m comet_megatron.megatron.pretrain)
echo "+ ${LAUNCH[*]} ${ARGS[*]}"
if [ -n "${LOG:-}" ]; then
  mkdir -p "$(dirname "$LOG")"
  "${LAUNCH[@]}" "${ARGS[@]}" 2>&1 | tee "$LOG"
else
  "${LAUNCH[@]}" "${ARGS[@]}"
fi
