# Session 22, call 1 (one GPU; no 2-GPU machine for the sixth session): layer0 at EP=2 with the peer's pushes emulated
# (benchmarks/bench_arrival.py): the peer's remote rows throttled to the NVLink write rate, its start delayed by a skew
# (+ its own local gathers when own_rows_first). Question of next-steps §1g: does expert-major (own_rows_first=False)
# lose its no-wait gain (s20: DSv3-like fc1 -18%, Qwen1.5 -14%) to waiting on the peer's rows?
# Prediction: at skew 0 both orders within 5% of their no-wait time (310cd88: the peer sends expert e's rows by
# ~(e+1)/E of its push, far ahead of the GEMM), so expert-major keeps its gain on DSv3-like / Qwen1.5; with a late peer
# (300-1000 us) expert-major pays ~the whole skew, own-rows-first absorbs part of it (its first wave needs no peer rows).
source notes/device/common.sh
for c in dsv3-like qwen3-30b-a3b qwen1.5-moe-a2.7b qwen2-57b-a14b mixtral-8x7b; do
  timeout 200 python benchmarks/bench_arrival.py --case $c --skews-us 0,100,300,1000 --iters 10 --out $OUT \
    > /tmp/arrival_$c.log 2>&1
  echo "$c exit $? ($((SECONDS-T0)) s)"; tail -4 /tmp/arrival_$c.log
done
ls $OUT
