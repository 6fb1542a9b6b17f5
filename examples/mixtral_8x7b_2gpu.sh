#!/bin/bash
# Mixtral-8x7B layer shapes on one node of 2 GPUs (the 2xH200 measurement): 4 layers, EP=2, seq 4096,
# micro-batch 1, global batch 8, bf16, distributed optimizer, aux-loss load balancing, mock data and
# NullTokenizer (vocab 32000) - the flags of Megatron-LM's measured anchor, plus --moe-comet when COMET=1.
#   COMET=0|1  ITERS=100  LOG=out/mixtral_comet.log  SAVE=/ckpt LOAD=/ckpt SAVE_INTERVAL=50  RECOMPUTE=1
#   MOE_FREQ=2 (alternate MoE and dense layers)  BACKEND=fused|reference   (all knobs: train_common.sh)
MODEL_ARGS=(--hidden-size 4096 --ffn-hidden-size 14336 --num-attention-heads 32
            --group-query-attention --num-query-groups 8 --num-experts 8 --moe-router-topk 2 --norm-epsilon 1e-5)
DEFAULT_EP=2 DEFAULT_TP=1 DEFAULT_PP=1 DEFAULT_NPROC=2 DEFAULT_NNODES=1
DEFAULT_LAYERS=4 DEFAULT_GBS=8 DEFAULT_ITERS=100 DEFAULT_VOCAB=32000
source "$(dirname "${BASH_SOURCE[0]}")/train_common.sh"
