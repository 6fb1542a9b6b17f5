# session 2, call 4: checkpoint interchange in training (Megatron alltoall <-> --moe-comet, distributed optimizer,
# MoE recompute, alternating dense/MoE layers), the patched Megatron-LM pretrain_gpt.py, and the Mixtral layer at
# the training's 4096 tokens per rank.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD
M="bash examples/mixtral_8x7b_2gpu.sh"
C="LAYERS=4 MOE_FREQ=2 ITERS=30"
R="--dist-ckpt-optim-fully-reshardable"
env $C COMET=0 SAVE=/tmp/ckA SAVE_INTERVAL=1000 EXTRA="$R --exit-interval 10" LOG=$OUT/resume_A_megatron_1-10.log timeout 80 $M >/dev/null 2>&1; echo "A $?"
env $C COMET=1 LOAD=/tmp/ckA SAVE=/tmp/ckB SAVE_INTERVAL=1000 RECOMPUTE=1 EXTRA="$R --exit-interval 20" LOG=$OUT/resume_B_comet_11-20.log timeout 80 $M >/dev/null 2>&1; echo "B $?"
env $C COMET=0 LOAD=/tmp/ckB EXTRA="$R" LOG=$OUT/resume_C_megatron_21-30.log timeout 80 $M >/dev/null 2>&1; echo "C $?"
env $C COMET=0 LOG=$OUT/resume_D_megatron_straight.log timeout 80 $M >/dev/null 2>&1; echo "D $?"
for f in $OUT/resume_*.log; do echo "== $f"; grep -E "Error|error:|Traceback|loading|iteration +[0-9]+/" $f | grep -v -i warn | cut -c1-60,170-290 | tail -12; done
# the patched Megatron-LM pretrain_gpt.py (main d98e8a6, its own megatron/) with --moe-comet
(cd .mlm && PYTHONPATH=$PWD:$PWD/.. CUDA_DEVICE_MAX_CONNECTIONS=1 timeout 90 torchrun --nproc-per-node 2 pretrain_gpt.py \
  --transformer-impl local --attention-backend unfused --num-layers 2 --hidden-size 4096 --ffn-hidden-size 14336 \
  --num-attention-heads 32 --group-query-attention --num-query-groups 8 --num-experts 8 --moe-router-topk 2 \
  --seq-length 4096 --max-position-embeddings 4096 --position-embedding-type rope --rotary-base 1000000 \
  --normalization RMSNorm --swiglu --disable-bias-linear --untie-embeddings-and-output-weights --init-method-std 0.01 \
  --attention-dropout 0.0 --hidden-dropout 0.0 --no-masked-softmax-fusion --no-rope-fusion \
  --no-gradient-accumulation-fusion --no-persist-layer-norm --moe-router-load-balancing-type aux_loss \
  --moe-aux-loss-coeff 1e-2 --moe-token-dispatcher-type alltoall --expert-model-parallel-size 2 \
  --micro-batch-size 1 --global-batch-size 8 --train-iters 5 --lr 1e-4 --min-lr 1e-5 --lr-decay-style cosine \
  --lr-warmup-iters 2 --weight-decay 0.1 --clip-grad 1.0 --bf16 --use-distributed-optimizer --mock-data \
  --tokenizer-type NullTokenizer --vocab-size 32000 --split 99,1,0 --log-interval 1 --eval-iters 0 \
  --eval-interval 100000 --seed 1234 --moe-comet --moe-comet-backend auto > $OUT/patched_pretrain_gpt.log 2>&1); echo "patched $?"
grep -E "Error|Traceback|comet|iteration +[0-9]+/" $OUT/patched_pretrain_gpt.log | grep -v -i "warn\|^ *--\|\.\.\.\." | cut -c1-60,170-290 | tail -8
timeout 90 python -m torch.distributed.run --standalone --nproc-per-node=2 benchmarks/bench_layer.py \
  --cases mixtral-8x7b --tokens 4096 --variants megatron,comet --out $OUT > $OUT/bench_4096.log 2>&1
grep -v -i "warn" $OUT/bench_4096.log | tail -6
