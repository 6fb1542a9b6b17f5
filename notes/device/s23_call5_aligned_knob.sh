# Session 23, call 5 (one GPU). KernelConfig.aligned_peer_stores (default on) replaces calls 2-4's A/B through an old
# tree: the GPU tests at EP=1 (with the new pinned-off case), then bench_gemm_core with the two settings interleaved
# in one process, six cases at EP=2 simulated (Phi also at EP=1).
# Prediction: tests pass; on vs off as calls 2-4 (fc2 -15..-21% Mixtral / Qwen1.5 / Qwen3, Phi's fc1 data-gradient
# +~14% at EP=2 simulated, even at EP=1).
source notes/device/common.sh
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 260 python -m pytest -q -p no:cacheprovider tests/test_fused_gpu.py \
  -m gpu -k ep1 > $OUT/gpu_tests_ep1.log 2>&1
echo "GPU tests exit $? ($((SECONDS-T0)) s)"; grep -E "passed|failed|FAIL|Error" $OUT/gpu_tests_ep1.log | tail -4
C='[{}, {"aligned_peer_stores": false}, {}, {"aligned_peer_stores": false}]'
for run in "qwen3-30b-a3b --ep 2" "qwen1.5-moe-a2.7b --ep 2" "dsv3-like --ep 2" "mixtral-8x7b --ep 2" \
    "qwen2-57b-a14b --ep 2" "phi3.5-moe --ep 2" "phi3.5-moe --ep 1"; do
  set -- $run
  timeout 120 python benchmarks/bench_gemm_core.py --case $1 $2 $3 --configs "$C" --iters 15 --out /tmp/core > /tmp/core.log 2>&1
  echo "$run exit $? ($((SECONDS-T0)) s)"; grep -A6 "^kernel" /tmp/core.log | cut -c1-100; grep "exact" /tmp/core.log | grep -c True
  cp /tmp/core/bench_gemm_core_$1.json $OUT/core_$1_ep$3.json
done
cd $OUT && tar czf cores.tgz core_*.json && rm -f core_*.json /tmp/core/*.png; ls $OUT
