# session 2, call 5: checkpoint interchange in training with a small Mixtral-like model (hidden 1024, 2 layers:
# MoE + dense), distributed optimizer (fully reshardable), MoE recompute under Comet.
#   A: Megatron alltoall, 12 iterations, saves at 4, 8, 12 (reference for B's 5-8 on the Megatron side)
#   B: --moe-comet loads A@4, runs 5-12, saves at 8, 12 (reference for C's 9-12 on the Comet side)
#   C: Megatron loads B@8, runs 9-12
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=4G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD
M="bash examples/mixtral_8x7b_2gpu.sh"
S="--hidden-size 1024 --ffn-hidden-size 3584 --num-attention-heads 8 --num-query-groups 2 --dist-ckpt-optim-fully-reshardable"
env LAYERS=2 MOE_FREQ=2 ITERS=12 SAVE_INTERVAL=4 COMET=0 SAVE=/tmp/ckA EXTRA="$S" LOG=$OUT/resume_A_megatron.log timeout 55 $M >/dev/null 2>&1; echo "A $?"
env LAYERS=2 MOE_FREQ=2 ITERS=12 SAVE_INTERVAL=4 COMET=1 LOAD=/tmp/ckA SAVE=/tmp/ckB RECOMPUTE=1 EXTRA="$S --ckpt-step 4" LOG=$OUT/resume_B_comet.log timeout 65 $M >/dev/null 2>&1; echo "B $?"
env LAYERS=2 MOE_FREQ=2 ITERS=12 COMET=0 LOAD=/tmp/ckB EXTRA="$S --ckpt-step 8" LOG=$OUT/resume_C_megatron.log timeout 55 $M >/dev/null 2>&1; echo "C $?"
for f in $OUT/resume_*.log; do echo "== $f"; grep -E "Error|Traceback|loading|successfully|iteration +[0-9]+/" $f | grep -v -i warn | sed -E 's/.*(iteration +[0-9]+).*(lm loss: [0-9.E+-]+).*/\1 \2/' | cut -c1-160 | tail -10; done
