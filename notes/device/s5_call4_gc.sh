# Session 5, call 4 (nvidia-h200-x2, carry .whl). Call 3: in training the host plan step takes 0.96 ms (GPU idle)
# against ~0.1 ms in the layer benchmark (cProfile: build_plan 50 us per call); Megatron's experts forward host time
# is also ~5x its benchmark value. Suspect: Python garbage collections landing in the window between the counts
# read and the first launch. This call: the training pair with collections timed (COMET_LAYER_TIMING's "python"
# kind, per generation, with each section's host max), and a third run with COMET_DEFER_GC=1 (collection off from
# the counts read to the first launch).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
COMET_LAYER_TIMING=64 OUTDIR=$OUT ITERS=40 TIMEOUT=140 bash examples/compare_2gpu.sh mixtral_8x7b_2gpu.sh | tail -3
COMET=1 COMET_DEFER_GC=1 COMET_LAYER_TIMING=64 ITERS=40 LOG=$OUT/mixtral_8x7b_2gpu_comet_defer_gc.log timeout 140 \
  bash examples/mixtral_8x7b_2gpu.sh > /dev/null 2>&1; echo "defer-gc run exit $? ($((SECONDS-T0)) s)"
python examples/compare_runs.py $OUT/mixtral_8x7b_2gpu_megatron.log $OUT/mixtral_8x7b_2gpu_comet.log \
  $OUT/mixtral_8x7b_2gpu_comet_defer_gc.log --labels megatron comet comet_defer_gc --json $OUT/compare3.json
rm -f $OUT/*.png
python -m comet_megatron.megatron.layer_timing $OUT/mixtral_8x7b_2gpu_*.log 2>/dev/null | grep -v attention | grep -v " bwd\." | grep -v router
