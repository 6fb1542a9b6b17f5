#!/bin/bash
# Mixtral-8x7B (32 layers, hidden 4096, 8 experts top-2 of ffn 14336, GQA 32/8) with Megatron's reference
# layout: TP=1, PP=4, EP=8 (one node per pipeline stage: expert parallelism stays inside a node) on 4 nodes of
# 8 GPUs, global batch 256, seq 4096. Run it on every node with NODE_RANK=0..3 and MASTER_ADDR set.
#   COMET=1 (default): --moe-comet; COMET=0: Megatron's alltoall dispatcher (same model, same seed).
#   DATA_PATH=<prefix> TOKENIZER_TYPE=Llama2Tokenizer TOKENIZER_MODEL=<tokenizer.model> for real data;
#   without them: mock data. EP=2 NPROC=2 NNODES=1 PP=1 LAYERS=4 ... runs a sub-case (see mixtral_8x7b_2gpu.sh).
# All knobs: examples/train_common.sh.
MODEL_ARGS=(--hidden-size 4096 --ffn-hidden-size 14336 --num-attention-heads 32
            --group-query-attention --num-query-groups 8 --num-experts 8 --moe-router-topk 2 --norm-epsilon 1e-5)
DEFAULT_EP=8 DEFAULT_TP=1 DEFAULT_PP=4 DEFAULT_NPROC=8 DEFAULT_NNODES=4
DEFAULT_LAYERS=32 DEFAULT_GBS=256 DEFAULT_ITERS=500000 DEFAULT_VOCAB=32000
source "$(dirname "${BASH_SOURCE[0]}")/train_common.sh"
