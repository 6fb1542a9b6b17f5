# Session 19, call 2 (one GPU): call 1's `-k ep1` also deselected the launcher, routing-kernel and weight-gradient tests;
# run them under the carried Triton 3.9, then the GEMM-core pair again in the other order (3.9 first) for the noise.
source notes/device/common.sh
source notes/device/triton39.sh
run39 env COMET_TEST_DEVICE=cuda timeout 240 python -m pytest -q -p no:cacheprovider tests/test_launcher.py \
  tests/test_routing_kernel.py tests/test_wgrad_kernel.py tests/test_grouped_linear.py -k "compiled or gpu or launch or cached" \
  > $OUT/tests_triton39_rest.log 2>&1
echo "tests under 3.9 exit $? ($((SECONDS-T0)) s)"; tail -4 $OUT/tests_triton39_rest.log
mkdir -p $OUT/t36 $OUT/t39
for v in 39 36; do
  cmd="timeout 100 python benchmarks/bench_gemm_core.py --case mixtral-8x7b --tokens 4096 --ep 2 --out $OUT/t$v"
  if [ $v = 39 ]; then run39 $cmd > $OUT/core_t$v.log 2>&1; else $cmd > $OUT/core_t$v.log 2>&1; fi
  echo "core triton $v exit $? ($((SECONDS-T0)) s)"; grep -v -i warn $OUT/core_t$v.log | grep -A7 "^kernel"
done
mv $OUT/t36/*.json $OUT/core_mixtral_t36.json; mv $OUT/t39/*.json $OUT/core_mixtral_t39.json; rm -rf $OUT/t36 $OUT/t39
ls $OUT
