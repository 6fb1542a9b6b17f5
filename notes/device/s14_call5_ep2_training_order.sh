# Session 14, call 5 (nvidia-h200-x2, carry .whl): call 4's Mixtral pair (Megatron first: 695.5 vs 655.2 ms/step,
# 1.061x) repeated with Comet trained first (ORDER="1 0"), to see whether run order biases the step ratio; then the
# fine-grained training pair (examples/qwen3_30b_a3b_2gpu.sh, 25 it.; s4: 3.53x) with the current code.
# Predicted: Mixtral 1.04-1.08x whichever runs first; Qwen3 >= 3x.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
mkdir -p $OUT/train
ORDER="1 0" OUTDIR=$OUT/train ITERS=60 TIMEOUT=120 bash examples/compare_2gpu.sh mixtral_8x7b_2gpu.sh | tail -3
echo "mixtral done ($((SECONDS-T0)) s)"
OUTDIR=$OUT/train ITERS=25 TIMEOUT=90 bash examples/compare_2gpu.sh qwen3_30b_a3b_2gpu.sh | tail -3
echo "qwen3 done ($((SECONDS-T0)) s)"
mv $OUT/train/*_compare.json $OUT/ 2>/dev/null; tar czf $OUT/train.tgz -C $OUT train && rm -rf $OUT/train
ls $OUT
