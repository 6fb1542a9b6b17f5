# Session 20, call 6 (one GPU, the image's Triton 3.6): call 5's expert-major M-tile order is now
# KernelConfig.own_rows_first=False (plan kernel + host plan). (1) The compiled plan kernel equals the host plan for
# both orders (plan_equivalence alternates them). (2) Every GEMM core, default order vs expert-major, each twice
# (interleaved: the repeat shows the noise), all five cases. Prediction: call 5's DSv3 gains (-10..-18%) hold, Mixtral's
# fc2 +13% was noise or holds (then the order is per shape: the tuner's last candidate).
source notes/device/common.sh
env COMET_TEST_DEVICE=cuda timeout 200 python -m pytest -q -p no:cacheprovider tests/test_fused_gpu.py \
  -k device_plan_kernel_compiled > $OUT/plan_test.log 2>&1
echo "plan kernel test exit $? ($((SECONDS-T0)) s)"; tail -2 $OUT/plan_test.log
C='[{}, {"own_rows_first": false}, {}, {"own_rows_first": false}]'
for c in dsv3-like qwen1.5-moe-a2.7b qwen2-57b-a14b phi3.5-moe mixtral-8x7b; do
  t=""; [ $c = mixtral-8x7b ] && t="--tokens 4096"
  timeout 150 python benchmarks/bench_gemm_core.py --case $c $t --ep 2 --configs "$C" --iters 15 --out $OUT \
    > /tmp/core_$c.log 2>&1
  echo "$c exit $? ($((SECONDS-T0)) s)"; grep -A6 "^kernel" /tmp/core_$c.log
done
rm -f $OUT/*.png; ls $OUT
