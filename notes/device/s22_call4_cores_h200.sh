# Session 22, call 4 (nvidia-h200): the four GEMM cores in both M-tile orders (nothing waits), each order twice
# interleaved, on the two shapes whose fc1 gained in call 3 (H200, skew 0: DSv3-like 4.62 -> 4.31, Qwen3-30B-A3B 0.618
# -> 0.585 ms) — s20 measured this on an H100 only. Prediction: DSv3-like's four cores -8..-12% (H100: -13%), Qwen3
# -3..-8%; then the default flips to expert-major where an expert has <= 4 M-tiles at EP >= 2.
source notes/device/common.sh
C='[{"own_rows_first": true}, {"own_rows_first": false}, {"own_rows_first": true}, {"own_rows_first": false}]'
for c in dsv3-like qwen3-30b-a3b; do
  timeout 200 python benchmarks/bench_gemm_core.py --case $c --ep 2 --configs "$C" --iters 15 --out $OUT \
    > /tmp/core_$c.log 2>&1
  echo "$c exit $? ($((SECONDS-T0)) s)"; grep -A6 "^kernel" /tmp/core_$c.log
done
rm -f $OUT/*.png; ls $OUT
