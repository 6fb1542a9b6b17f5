# Session 23, call 2 (one GPU). Peer base addresses marked 16-byte aligned (kernels/sync.py: peer_pointer): the push
# units' row stores (both dispatch kernels) and fc2 ⊕ combine's epilogue stores (forward fc2, backward fc1 data-gradient)
# become 16-byte st.global.v4 instead of 2-byte st.global.b16 (8x fewer store instructions; sm_90 PTX, CI-checked).
# A = tmp/ab_old (comet_megatron, kernels, benchmarks of the commit before, carried), B = this tree; interleaved.
# 1. EP=1 fused GPU tests (correctness with the vector stores: pushes into the receive buffer, fc2's combine slots).
# 2. bench_gemm_core (EP=2 simulated): every output compared exactly inside; fc1+push and fc2 are the columns that
#    change. Prediction: fc2 -3..-10% (epilogue store issue ~10% of a 128x128 tile at K=F=768-2048), fc1+push -5..-15%
#    on the fine-grained cases whose push programs bound layer0 (Qwen1.5, Qwen3, DSv3), Mixtral / Phi within noise.
source notes/device/common.sh
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 240 python -m pytest -q -p no:cacheprovider tests/test_fused_gpu.py \
  -m gpu -k ep1 > $OUT/gpu_tests_ep1.log 2>&1
echo "GPU tests exit $? ($((SECONDS-T0)) s)"; grep -E "passed|failed|FAIL|Error" $OUT/gpu_tests_ep1.log | tail -4
for c in qwen3-30b-a3b qwen1.5-moe-a2.7b dsv3-like mixtral-8x7b qwen2-57b-a14b phi3.5-moe; do
  round=0
  for v in old new old new; do
    round=$((round + 1))
    script=benchmarks/bench_gemm_core.py; [ $v = old ] && script=tmp/ab_old/benchmarks/bench_gemm_core.py
    timeout 100 python $script --case $c --ep 2 --iters 15 --out /tmp/core_$v > /tmp/core_${c}_$v.log 2>&1
    echo "$c $v exit $? ($((SECONDS-T0)) s)"; grep -E "^(fc1|fc2)" /tmp/core_${c}_$v.log | cut -c1-60 | tr '\n' ';'; echo
    grep -E "exact|rel_err|cfg0 " /tmp/core_${c}_$v.log | head -2 | cut -c1-200
    cp /tmp/core_$v/bench_gemm_core_$c.json $OUT/core_${c}_${round}_$v.json 2>/dev/null
  done
done
cd $OUT && tar czf cores.tgz core_*.json && rm -f core_*.json; ls $OUT
