# Session 11, call 1 (nvidia-h200; no 2-GPU machine lent again). Two persistent programs per SM, one warpgroup each
# (KernelConfig.programs_per_sm=2, 4 warps, fc1 64 wide per half = 128x128 outputs, 3 stages: 98 KB of shared memory
# each), so one program's epilogue runs while the other's main loop keeps the tensor cores busy — what cuBLAS's
# ping-pong kernels do with two consumer warpgroups. Prediction: fc1 (Mixtral 4096 tok, 2 ranks simulated) 3.0 ms ->
# ~2.75 (toward cuBLAS's bare 2.67; the epilogue is ~8% of a 128x256 tile's time), fc2 / data-gradients within +-5%;
# config C (same tiles, one program per SM) slower than the default — the gain must come from the pairing.
# (1) GPU tests of f20bb33 (shared tma_capable) at EP=1, then the fused EP=1 tests again with the 2/SM config;
# (2) bench_gemm_core on Mixtral 4096, Qwen1.5, Qwen2-57B, DSv3: A default, B 2/SM, C B's tiles at 1/SM.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
B='{"fc1_block_n": 64, "fc2_block_n": 128, "dgrad_block_n": 128, "num_warps": 4, "num_stages": 3, "programs_per_sm": 2}'
C='{"fc1_block_n": 64, "fc2_block_n": 128, "dgrad_block_n": 128, "num_warps": 4, "num_stages": 3}'
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 200 python -m pytest -q tests/test_wgrad_kernel.py tests/test_grouped_linear.py \
  tests/test_routing_kernel.py tests/test_fused_gpu.py -k "ep1 or compiled or on_gpu" > $OUT/gpu_tests.log 2>&1
echo "GPU tests exit $? ($((SECONDS-T0)) s)"; grep -E "passed|failed|FAIL" $OUT/gpu_tests.log | tail -5
COMET_KERNEL_CONFIG="$B" COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 150 python -m pytest -q tests/test_fused_gpu.py \
  -k "ep1" > $OUT/gpu_tests_2psm.log 2>&1
echo "GPU tests 2/SM exit $? ($((SECONDS-T0)) s)"; grep -E "passed|failed|FAIL" $OUT/gpu_tests_2psm.log | tail -5
mkdir -p $OUT/g
for c in mixtral-8x7b:4096 qwen1.5-moe-a2.7b: qwen2-57b-a14b: dsv3-like:; do
  name=${c%%:*}; tok=${c##*:}
  timeout 100 python benchmarks/bench_gemm_core.py --case $name ${tok:+--tokens $tok} --out $OUT/g \
    --configs "[{}, $B, $C]" > $OUT/g/$name.log 2>&1
  echo "bench_gemm_core $name exit $? ($((SECONDS-T0)) s)"
done
for f in $OUT/g/*.log; do grep -A8 "tokens/rank" $f | head -9; done
tar czf $OUT/gemm_core.tgz -C $OUT g && rm -rf $OUT/g
ls $OUT
