#!/bin/bash
# Qwen3-30B-A3B layer shapes (128 experts top-8 of ffn 768: the fine-grained case) on one node of 2 GPUs:
# 4 layers, EP=2, seq 4096, micro-batch 1, global batch 8, bf16, distributed optimizer, aux-loss load
# balancing, mock data and NullTokenizer (vocab 32000), plus --moe-comet when COMET=1.
#   COMET=0|1  ITERS=100  LOG=out/qwen3_comet.log  SAVE=/ckpt LOAD=/ckpt  RECOMPUTE=1  MOE_FREQ=2
#   (all knobs: train_common.sh)
MODEL_ARGS=(--hidden-size 2048 --ffn-hidden-size 6144 --num-attention-heads 32 --kv-channels 128
            --group-query-attention --num-query-groups 4 --qk-layernorm --norm-epsilon 1e-6
            --num-experts 128 --moe-router-topk 8 --moe-ffn-hidden-size 768)
AUX_LOSS_COEFF=${AUX_LOSS_COEFF:-1e-3}
DEFAULT_EP=2 DEFAULT_TP=1 DEFAULT_PP=1 DEFAULT_NPROC=2 DEFAULT_NNODES=1
DEFAULT_LAYERS=4 DEFAULT_GBS=8 DEFAULT_ITERS=100 DEFAULT_VOCAB=32000
source "$(dirname "${BASH_SOURCE[0]}")/train_common.sh"
