#!/bin/bash
# Qwen2-57B-A14B (28 layers, hidden 3584, 64 experts top-8 of ffn 2560 + a gated shared expert of 20480,
# GQA 28/4, qkv bias, softmax before top-k, vocab 151936) with TP=1, PP=4, EP=8 (one node per pipeline
# stage: expert parallelism inside a node) on 4 nodes of 8 GPUs, global batch 256, seq 4096.
# Run it on every node with NODE_RANK=0..3 and MASTER_ADDR set.
#   COMET=1 (default): --moe-comet; COMET=0: Megatron's alltoall dispatcher (same model, same seed).
#   DATA_PATH=<prefix> TOKENIZER_TYPE=HuggingFaceTokenizer TOKENIZER_MODEL=Qwen/Qwen2-57B-A14B for real data;
#   without them: mock data. EP=2 NPROC=2 NNODES=1 PP=1 LAYERS=4 ... runs a sub-case (see qwen2_57b_a14b_2gpu.sh).
# All knobs: examples/train_common.sh.
MODEL_ARGS=(--hidden-size 3584 --ffn-hidden-size 18944 --num-attention-heads 28
            --group-query-attention --num-query-groups 4 --add-qkv-bias --norm-epsilon 1e-6
            --num-experts 64 --moe-router-topk 8 --moe-ffn-hidden-size 2560 --moe-router-pre-softmax
            --moe-shared-expert-intermediate-size 20480 --moe-shared-expert-gate)
AUX_LOSS_COEFF=${AUX_LOSS_COEFF:-1e-3}
DEFAULT_EP=8 DEFAULT_TP=1 DEFAULT_PP=4 DEFAULT_NPROC=8 DEFAULT_NNODES=4
DEFAULT_LAYERS=28 DEFAULT_GBS=256 DEFAULT_ITERS=500000 DEFAULT_VOCAB=151936
source "$(dirname "${BASH_SOURCE[0]}")/train_common.sh"
