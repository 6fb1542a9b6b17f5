#!/bin/bash
# Qwen3-30B-A3B (48 layers, hidden 2048, 128 fine-grained experts top-8 of ffn 768, no shared expert, GQA 32/4
# with head dim 128 and q/k RMSNorm, vocab 151936) with TP=1, PP=2, EP=8 on 2 nodes of 8 GPUs (expert
# parallelism inside a node), global batch 256, seq 4096.
# Run it on every node with NODE_RANK=0..1 and MASTER_ADDR set.
#   COMET=1 (default): --moe-comet; COMET=0: Megatron's alltoall dispatcher (same model, same seed).
#   DATA_PATH=<prefix> TOKENIZER_TYPE=HuggingFaceTokenizer TOKENIZER_MODEL=Qwen/Qwen3-30B-A3B for real data;
#   without them: mock data. EP=2 NPROC=2 NNODES=1 PP=1 LAYERS=4 ... runs a sub-case (see qwen3_30b_a3b_2gpu.sh).
# All knobs: examples/train_common.sh.
MODEL_ARGS=(--hidden-size 2048 --ffn-hidden-size 6144 --num-attention-heads 32 --kv-channels 128
            --group-query-attention --num-query-groups 4 --qk-layernorm --norm-epsilon 1e-6
            --num-experts 128 --moe-router-topk 8 --moe-ffn-hidden-size 768)
AUX_LOSS_COEFF=${AUX_LOSS_COEFF:-1e-3}
DEFAULT_EP=8 DEFAULT_TP=1 DEFAULT_PP=2 DEFAULT_NPROC=8 DEFAULT_NNODES=2
DEFAULT_LAYERS=48 DEFAULT_GBS=256 DEFAULT_ITERS=500000 DEFAULT_VOCAB=151936
source "$(dirname "${BASH_SOURCE[0]}")/train_common.sh"
