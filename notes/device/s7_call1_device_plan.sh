# Session 7, call 1 (nvidia-h200, one GPU: the 2-GPU machine is not lent; carry .whl). The plan built on the GPU:
# - GPU tests at EP=1 (fused == reference, both backwards) plus the compiled plan kernel == build_plan (120 random
#   counts matrices, EP 1-8 simulated on one device, capacity overflow rebuilt).
# - layer bench Mixtral at 4096 tokens: device plan (default) vs COMET_HOST_PLAN=1, Megatron beside them.
#   Predicted: forward 6.28 -> ~6.0 ms (the host's table build and the pinned copy leave the counts-read -> first
#   kernel window; the plan kernel runs while the host waits).
# - training, 2 Mixtral layers at EP=1, 30 iterations, COMET_LAYER_TIMING: Megatron, Comet (device plan), Comet
#   (COMET_HOST_PLAN=1). Predicted: fwd.plan host 0.80 -> ~0.3 ms; step time within noise (a few ms of 740).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 150 python -m pytest -q -x tests/test_fused_gpu.py > $OUT/fused_gpu_tests.log 2>&1
echo "fused gpu tests exit $? ($((SECONDS-T0)) s)"; tail -1 $OUT/fused_gpu_tests.log
for plan in 0 1; do
  COMET_HOST_PLAN=$plan timeout 120 python -m torch.distributed.run --standalone --nproc-per-node=1 \
    benchmarks/bench_layer.py --cases mixtral-8x7b --tokens 4096 --variants megatron,comet --out $OUT/bench_hostplan$plan \
    > $OUT/bench_hostplan$plan.log 2>&1
  echo "bench COMET_HOST_PLAN=$plan exit $? ($((SECONDS-T0)) s)"; grep -v -i warn $OUT/bench_hostplan$plan.log | tail -3
done
EP=1 NPROC=1 LAYERS=2 COMET_LAYER_TIMING=32 OUTDIR=$OUT/train ITERS=30 TIMEOUT=150 \
  bash examples/compare_2gpu.sh mixtral_8x7b_2gpu.sh | tail -4
echo "training pair done ($((SECONDS-T0)) s)"
EP=1 NPROC=1 LAYERS=2 COMET_LAYER_TIMING=32 ITERS=30 COMET=1 COMET_HOST_PLAN=1 LOG=$OUT/train/mixtral_8x7b_2gpu_comet_hostplan.log \
  timeout 150 bash examples/mixtral_8x7b_2gpu.sh > /dev/null 2>&1
echo "host-plan training exit $? ($((SECONDS-T0)) s)"
python examples/compare_runs.py $OUT/train/mixtral_8x7b_2gpu_megatron.log $OUT/train/mixtral_8x7b_2gpu_comet.log \
  $OUT/train/mixtral_8x7b_2gpu_comet_hostplan.log --labels megatron comet comet_hostplan --seq 4096 \
  --json $OUT/train_compare.json | tail -8
python -m comet_megatron.megatron.layer_timing $OUT/train/mixtral_8x7b_2gpu_comet.log --json $OUT/layer_timing_device_plan.json \
  | grep -E "fwd\.|total" | head -12
python -m comet_megatron.megatron.layer_timing $OUT/train/mixtral_8x7b_2gpu_comet_hostplan.log \
  --json $OUT/layer_timing_host_plan.json | grep -E "fwd\.|total" | head -12
rm -f $OUT/*.png $OUT/train/*.png
tar czf $OUT/runs.tgz -C $OUT bench_hostplan0 bench_hostplan1 train && rm -rf $OUT/bench_hostplan0 $OUT/bench_hostplan1 $OUT/train
ls $OUT
