# Session 22, call 5 (nvidia-h200): the emulated EP=2 arrival for the backward's dispatch ⊕ fc2 data-gradient
# (bench_arrival --layer fc2_dgrad; the output-gradient rows travel like the forward's tokens), five cases, then
# layer0 again on the two shapes whose default flipped (the repeat shows the noise). The default now makes the M-tiles
# expert-major for both kernels where an expert has <= 4 M-tiles (DSv3-like, Qwen3-30B-A3B).
# Prediction: at skew 0 expert-major's data-gradient kernel is 5-10% faster on DSv3-like / Qwen3 (call 4, no wait:
# -11% / -10%), within 2% elsewhere; layer0 repeats call 3 within 3%.
source notes/device/common.sh
for c in dsv3-like qwen3-30b-a3b qwen1.5-moe-a2.7b qwen2-57b-a14b mixtral-8x7b; do
  timeout 150 python benchmarks/bench_arrival.py --case $c --layer fc2_dgrad --skews-us 0,100,300,1000 --iters 10 \
    --out $OUT > /tmp/arrival_dgrad_$c.log 2>&1
  echo "$c fc2_dgrad exit $? ($((SECONDS-T0)) s)"; tail -3 /tmp/arrival_dgrad_$c.log
done
for c in dsv3-like qwen3-30b-a3b; do
  timeout 150 python benchmarks/bench_arrival.py --case $c --skews-us 0,100,300,1000 --iters 10 > /tmp/arrival_$c.log 2>&1
  echo "$c fc1 exit $? ($((SECONDS-T0)) s)"; tail -3 /tmp/arrival_$c.log
done
rm -f $OUT/*.png; ls $OUT
