#!/bin/bash
# Qwen2-57B-A14B layer shapes (64 experts top-8 of ffn 2560, gated shared expert 20480, hidden 3584) on one
# node of 2 GPUs: 4 layers, EP=2, seq 4096, micro-batch 1, global batch 8, bf16, distributed optimizer,
# aux-loss load balancing, mock data and NullTokenizer (vocab 32000, as the Megatron-LM anchor).
#   COMET=0|1  ITERS=100  LOG=out/qwen_comet.log  SAVE=/ckpt LOAD=/ckpt SAVE_INTERVAL=50  RECOMPUTE=1
#   MOE_FREQ=2 (alternate MoE and dense layers)  BACKEND=fused|reference   (all knobs: train_common.sh)
MODEL_ARGS=(--hidden-size 3584 --ffn-hidden-size 18944 --num-attention-heads 28
            --group-query-attention --num-query-groups 4 --add-qkv-bias --norm-epsilon 1e-6
            --num-experts 64 --moe-router-topk 8 --moe-ffn-hidden-size 2560 --moe-router-pre-softmax
            --moe-shared-expert-intermediate-size 20480 --moe-shared-expert-gate)
AUX_LOSS_COEFF=${AUX_LOSS_COEFF:-1e-3}
DEFAULT_EP=2 DEFAULT_TP=1 DEFAULT_PP=1 DEFAULT_NPROC=2 DEFAULT_NNODES=1
DEFAULT_LAYERS=4 DEFAULT_GBS=8 DEFAULT_ITERS=100 DEFAULT_VOCAB=32000
source "$(dirname "${BASH_SOURCE[0]}")/train_common.sh"
