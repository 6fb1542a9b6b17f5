# Prepared for the next device session (nvidia-h200-x2, carry .whl): ~7 minutes in one call (timeouts sum to
# 555 s plus the install: run it with timeout_s=600).
# 1. Why Mixtral training is slower: profile steps 20-22 of both runs, summarize the traces side by side.
# 2. Checkpoint resume across layouts in training, small model (hidden 1024, MoE + dense layer) so checkpoints
#    write in seconds. Megatron without Apex/TE cannot load fully-reshardable optimizer state (KeyError 'step'),
#    so the cross-layout loads keep the weights only (--no-load-optim); the guard must refuse the load without it.
#      A: Megatron, 12 iterations, saves at 4, 8, 12        B: Comet loads A@4 (weights), runs 5-12, saves at 8
#      G: Comet loads A@4 WITHOUT --no-load-optim -> must stop at startup with the checkpoint guard's message
#      C: Megatron loads B@8 (weights), runs 9-12
#    Check: B's iteration-5 loss == A's iteration-5 loss up to bf16 numerics (same weights, same batch), and
#    C's iteration-9 loss == B's iteration-9 loss likewise.
# 3. The layer under uneven routing, at the training's 4096 tokens.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD
OUTDIR=$OUT ITERS=25 TIMEOUT=130 PROFILE=1 bash examples/compare_2gpu.sh mixtral_8x7b_2gpu.sh
M="bash examples/mixtral_8x7b_2gpu.sh"
S="--hidden-size 1024 --ffn-hidden-size 3584 --num-attention-heads 8 --num-query-groups 2"
env LAYERS=2 MOE_FREQ=2 ITERS=12 SAVE_INTERVAL=4 COMET=0 SAVE=/tmp/ckA EXTRA="$S" LOG=$OUT/resume_A.log timeout 60 $M >/dev/null 2>&1; echo "A $?"
env LAYERS=2 MOE_FREQ=2 ITERS=12 COMET=1 LOAD=/tmp/ckA EXTRA="$S --ckpt-step 4" LOG=$OUT/resume_G.log timeout 45 $M >/dev/null 2>&1; echo "G $? (must fail)"
env LAYERS=2 MOE_FREQ=2 ITERS=12 SAVE_INTERVAL=4 COMET=1 LOAD=/tmp/ckA SAVE=/tmp/ckB RECOMPUTE=1 EXTRA="$S --ckpt-step 4 --no-load-optim" LOG=$OUT/resume_B.log timeout 60 $M >/dev/null 2>&1; echo "B $?"
env LAYERS=2 MOE_FREQ=2 ITERS=12 COMET=0 LOAD=/tmp/ckB EXTRA="$S --ckpt-step 8 --no-load-optim" LOG=$OUT/resume_C.log timeout 55 $M >/dev/null 2>&1; echo "C $?"
grep -h "CometConfigError" $OUT/resume_G.log | head -2 | cut -c1-300
python examples/compare_runs.py $OUT/resume_A.log $OUT/resume_B.log --labels A_megatron B_comet --skip 0   # Δloss it1 = iteration 5
python examples/compare_runs.py $OUT/resume_B.log $OUT/resume_C.log --labels B_comet C_megatron --skip 0    # Δloss it1 = iteration 9
timeout 75 python -m torch.distributed.run --standalone --nproc-per-node=2 benchmarks/bench_layer.py \
  --cases mixtral-8x7b --tokens 4096 --variants megatron,comet --router-skew 3 --out $OUT > $OUT/bench_skew.log 2>&1
grep -v -i warn $OUT/bench_skew.log | tail -5
