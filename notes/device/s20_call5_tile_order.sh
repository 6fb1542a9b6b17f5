# Session 20, call 5 (one GPU, the image's Triton 3.6): call 4 showed the 2-CTA kernel beating the Triton fc1 core by
# 10% on DSv3-like only, where its work items (two M-tiles of one expert, sorted expert-major) differ most from the
# plan's order (tiles of own rows first, then the rest: at EP=2 an expert with ~256 rows splits over both groups, so
# each of its weight tiles is read twice). Test that reading: every GEMM core with rank 0's M-tiles as planned and
# sorted expert-major (bench_gemm_core --tile-orders plan,expert; MODE=2: flags published, nothing waits).
# Prediction: DSv3 fc1 -8..-12% with the expert-major order, Qwen1.5/Qwen2-57B a few %, Mixtral/Phi unchanged.
source notes/device/common.sh
for c in dsv3-like qwen1.5-moe-a2.7b qwen2-57b-a14b mixtral-8x7b; do
  t=""; [ $c = mixtral-8x7b ] && t="--tokens 4096"
  timeout 170 python benchmarks/bench_gemm_core.py --case $c $t --ep 2 --tile-orders plan,expert --iters 15 \
    --out $OUT > $OUT/core_$c.log 2>&1
  echo "$c exit $? ($((SECONDS-T0)) s)"; grep -A6 "^kernel" $OUT/core_$c.log
done
