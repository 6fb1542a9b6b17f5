# Prepared in sessions 9-10 for the first call on nvidia-h200-x2 (not run yet; carry .whl; rename to sN_call1_*.sh when
# it runs). Nothing since session 5 has run at EP=2: the reordered backward (s6), the plan built on the GPU (s7), the
# routing kernels and self-zeroing queues (s8), the experts' own accumulation into main_grad (s9), the weight-gradient
# kernel's TMA loads and bulk reduce-add (s10). Predicted: every GPU test passes at EP=2; Mixtral training (4 layers,
# EP=2) Comet with main_grad accumulation ~25 ms/step faster than Comet with DDP's add (s9 at EP=1: -55 ms with twice
# the local experts), i.e. ~1.02x Megatron from s5's 0.985x; in situ fwd.plan host ~0.2 ms (s5: 0.7-1.0).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 240 python -m pytest -q tests/test_fused_gpu.py tests/test_routing_kernel.py \
  tests/test_wgrad_kernel.py tests/test_grouped_linear.py -k "ep2 or compiled or on_gpu" > $OUT/gpu_tests_ep2.log 2>&1
echo "GPU tests exit $? ($((SECONDS-T0)) s)"; grep -E "passed|failed|FAIL" $OUT/gpu_tests_ep2.log | tail -5
for run in megatron:0:auto comet:1:auto comet_ddp_add:1:megatron; do
  name=${run%%:*}; rest=${run#*:}; comet=${rest%%:*}; mode=${rest#*:}
  COMET=$comet COMET_WGRAD_ACCUMULATION=$mode COMET_LAYER_TIMING=64 ITERS=40 LOG=$OUT/train/mixtral_ep2_$name.log \
    timeout 130 bash examples/mixtral_8x7b_2gpu.sh > /dev/null 2>&1
  echo "mixtral EP=2 training $name exit $? ($((SECONDS-T0)) s)"
done
python examples/compare_runs.py $OUT/train/mixtral_ep2_megatron.log $OUT/train/mixtral_ep2_comet.log \
  $OUT/train/mixtral_ep2_comet_ddp_add.log --labels megatron comet comet_ddp_add --seq 4096 \
  --json $OUT/train_compare.json --png $OUT/train_compare.png | tail -4
python -m comet_megatron.megatron.layer_timing $OUT/train/mixtral_ep2_comet*.log --json $OUT/layer_timing.json 2>/dev/null \
  | grep -E " (moe|experts) |fwd\.plan|bwd\.(fc[12]_wgrad|reduce)|rows"
tar czf $OUT/train.tgz -C $OUT train && rm -rf $OUT/train
ls $OUT
# Call 2: the full five-case layer table at EP=2 (fwd, fwd+bwd, peak memory, floors):
#   bash benchmarks/run_device.sh --variants megatron,nccl_grouped_mm,comet
