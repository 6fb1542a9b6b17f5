# Session 5, call 3 (nvidia-h200-x2, carry .whl). Call 2: in situ the fused backward now matches Megatron's (14.15 vs
# 14.07 ms per call), the forward does not (8.2 vs 7.3): fwd.plan (counts read + host plan) holds the GPU idle
# 1.05 ms and dispatch_fc1's launch costs 0.38 ms of host time while the GPU waits. This call: the host path after
# the counts read, profiled (bench --host-profile, cProfile), with the kernel config and the top-k gather order now
# prepared before the read and the tables copied inside the plan step; then the training pair with phases.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
COMET_LAYER_TIMING=40 timeout 150 python -m torch.distributed.run --standalone --nproc-per-node=2 benchmarks/bench_layer.py \
  --cases mixtral-8x7b --tokens 4096 --variants megatron,comet --host-profile 10 --out $OUT > $OUT/bench_4096.log 2>&1
echo "bench exit $? ($((SECONDS-T0)) s)"; rm -f $OUT/bench_layer_ep2.png
grep -v -i warn $OUT/bench_4096.log | grep -v comet-layer-timing | grep -A 40 "host profile" | cut -c1-150 | head -80
grep -v -i warn $OUT/bench_4096.log | grep -v comet-layer-timing | tail -4
COMET_LAYER_TIMING=64 OUTDIR=$OUT ITERS=40 TIMEOUT=140 bash examples/compare_2gpu.sh mixtral_8x7b_2gpu.sh | tail -3
echo "training done ($((SECONDS-T0)) s)"
rm -f $OUT/*.png
python -m comet_megatron.megatron.layer_timing $OUT/mixtral_8x7b_2gpu_megatron.log $OUT/mixtral_8x7b_2gpu_comet.log 2>/dev/null | grep -v attention
