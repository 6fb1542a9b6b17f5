# Session 8, call 2 (nvidia-h200). Call 1's Chrome trace: the fine-grained forward is paced by the host (GPU busy
# 1.7 of 3.1 ms per forward; dispatch_fc1 starts ~0.35 ms after the counts read, ~0.2 ms of it in the launcher),
# but the profiler inflates host costs 2-5x. Unprofiled host microseconds of every forward step
# (benchmarks/bench_host_path.py, new) on three cases; then the layer's in-situ phases (COMET_LAYER_TIMING).
# Predicted: dispatch_fc1's launcher 60-120 us (Triton's launch path with ~45 arguments and two TMA descriptors),
# build_local_routing ~100 us (14 torch ops), the bare 40-argument Triton launch >= 3x the 1-argument one.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
for c in qwen1.5-moe-a2.7b mixtral-8x7b dsv3-like; do
  timeout 120 python benchmarks/bench_host_path.py --case $c --iters 200 --out $OUT > $OUT/host_path_$c.log 2>&1
  echo "host path $c exit $? ($((SECONDS-T0)) s)"; grep -v -i warn $OUT/host_path_$c.log | tail -22
done
COMET_LAYER_TIMING=40 timeout 200 python -m torch.distributed.run --standalone --nproc-per-node=1 \
  benchmarks/bench_layer.py --cases qwen1.5-moe-a2.7b,mixtral-8x7b --variants comet --out $OUT/layer \
  > $OUT/layer_timing.log 2>&1
echo "layer timing exit $? ($((SECONDS-T0)) s)"
grep -v -i warn $OUT/layer_timing.log | grep -A8 "^case "; grep "comet-layer-timing" $OUT/layer_timing.log | tail -6
rm -rf $OUT/layer; ls $OUT
