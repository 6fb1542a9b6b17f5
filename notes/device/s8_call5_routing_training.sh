# Session 8, call 5 (nvidia-h200). Call 4: the block-parallel routing kernels cost 0.11 ms of GPU at most (DSv3) and
# cut the kernels' sum per layer fwd+bwd (Qwen1.5 4.81 -> 4.61 ms), host routing 520-650 -> 180-215 us; but Qwen3
# training at EP=1 ran 439.4 ms/step with them vs 417.5 with the sort, every iteration (the kernel run went first
# both times, on a fresh machine). Order effect or real? sort, kernel, sort again, 25 it. each, with the new in-situ
# dispatch timer (fwd.routing host/gpu per layer call). Predicted: fwd.routing host lower with the kernel; if the step
# is still slower, the difference is elsewhere (the probabilities' backward, the reduce).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
for run in sortA:0 kernel:1 sortB:0; do
  name=${run%%:*}; k=${run##*:}
  EP=1 NPROC=1 LAYERS=2 ITERS=25 COMET=1 COMET_LAYER_TIMING=32 COMET_ROUTING_KERNEL=$k LOG=$OUT/qwen3_$name.log \
    timeout 170 bash examples/qwen3_30b_a3b_2gpu.sh > /dev/null 2>&1
  echo "qwen3 training $name exit $? ($((SECONDS-T0)) s)"
done
python examples/compare_runs.py $OUT/qwen3_sortA.log $OUT/qwen3_kernel.log $OUT/qwen3_sortB.log \
  --labels sortA kernel sortB --seq 4096 --json $OUT/qwen3_compare.json | tail -4
for n in sortA kernel sortB; do echo "== $n"; grep "comet-layer-timing" $OUT/qwen3_$n.log | grep "dispatch:" | tail -1 | cut -c1-300
  grep "comet-layer-timing" $OUT/qwen3_$n.log | grep "fused:" | tail -1 | cut -c1-700; done
ls $OUT
