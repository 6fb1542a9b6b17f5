# Prepared in sessions 9-11 for the second call on nvidia-h200-x2 (after next_ep2_call1_tests.sh passed; carry .whl;
# rename to sN_call2_*.sh when it runs). Mixtral-shaped training at EP=2 (4 layers, seq 4096, 40 it.): Megatron, Comet,
# Comet with DDP's add instead of its own main_grad accumulation. Predicted: Comet ~25 ms/step faster than Comet with
# DDP's add (s9 at EP=1: -55 ms with twice the local experts), i.e. ~1.02x Megatron from session 5's 0.985x; in situ
# fwd.plan host ~0.2 ms (s5: 0.7-1.0); losses within bf16 noise of Megatron's.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
for run in megatron:0:auto comet:1:auto comet_ddp_add:1:megatron; do
  name=${run%%:*}; rest=${run#*:}; comet=${rest%%:*}; mode=${rest#*:}
  COMET=$comet COMET_WGRAD_ACCUMULATION=$mode COMET_LAYER_TIMING=64 ITERS=40 LOG=$OUT/train/mixtral_ep2_$name.log \
    timeout 170 bash examples/mixtral_8x7b_2gpu.sh > /dev/null 2>&1
  echo "mixtral EP=2 training $name exit $? ($((SECONDS-T0)) s)"
done
python examples/compare_runs.py $OUT/train/mixtral_ep2_megatron.log $OUT/train/mixtral_ep2_comet.log \
  $OUT/train/mixtral_ep2_comet_ddp_add.log --labels megatron comet comet_ddp_add --seq 4096 \
  --json $OUT/train_compare.json --png $OUT/train_compare.png | tail -4
python -m comet_megatron.megatron.layer_timing $OUT/train/mixtral_ep2_comet*.log --json $OUT/layer_timing.json 2>/dev/null \
  | grep -E " (moe|experts) |fwd\.plan|bwd\.(fc[12]_wgrad|reduce)|rows"
tar czf $OUT/train.tgz -C $OUT train && rm -rf $OUT/train
ls $OUT
# Call 3: the full five-case layer table at EP=2 (fwd, fwd+bwd, peak memory, floors):
#   bash benchmarks/run_device.sh --variants megatron,nccl_grouped_mm,comet
