# Session 22, call 6 (nvidia-h200): calls 3 and 5 again after review fixes to bench_arrival.py: the peer now pushes its
# whole unit list in its real order (own rows first: local then remote; expert-major: interleaved per expert) on P
# programs, P calibrated so the list takes local gathers (measured) + remote bytes at 314 GB/s — the slow end, against
# expert-major (calls 3/5 gave expert-major's peer no local units at all); the calibration no longer caps at the
# config's push count; rank 0's receive rows are poisoned before every emulated run and every run's outputs compared.
# Prediction: at skew 0 expert-major still ahead on DSv3-like / Qwen3 (layer0 -3..-7%, backward dispatch -4..-9%),
# but by less than calls 3/5; own rows first ahead or even on Qwen1.5 / Qwen2-57B / Mixtral.
source notes/device/common.sh
mkdir -p /tmp/a6
for layer in fc1 fc2_dgrad; do
  for c in dsv3-like qwen3-30b-a3b qwen1.5-moe-a2.7b qwen2-57b-a14b mixtral-8x7b; do
    timeout 150 python benchmarks/bench_arrival.py --case $c --layer $layer --skews-us 0,100,300,1000 --iters 10 \
      --out /tmp/a6 > /tmp/a6/$c-$layer.log 2>&1
    echo "$c $layer exit $? ($((SECONDS-T0)) s)"; tail -4 /tmp/a6/$c-$layer.log | grep -v "^chart"
  done
done
rm -f /tmp/a6/*.png; tar czf $OUT/call6_bench_arrival.tgz -C /tmp/a6 .; ls $OUT
