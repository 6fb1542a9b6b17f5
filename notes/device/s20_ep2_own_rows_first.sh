# For nvidia-h200-x2 (carry .whl), queued by session 20: what the expert-major M-tile order
# (KernelConfig.own_rows_first=False) does to the fused layer at EP=2, where tiles needing the peer's rows then
# interleave with local ones (one GPU, nothing waiting: DSv3-like GEMM cores -13%, Qwen1.5 fc1 -14%).
# Forward and forward+backward, default vs expert-major, each twice (the repeat shows the noise), four cases.
# Prediction: DSv3-like -1.0 to -2.0 ms fwd+bwd of ~30 ms, Qwen1.5 -0.1 to -0.2 ms; Mixtral and Qwen2-57B within noise;
# a loss (the first wave waiting on remote rows) shows as fwd.dispatch_fc1 time rising, not falling.
# Session 22: the default is now expert-major for DSv3-like and Qwen3-30B-A3B (<= 4 M-tiles per expert; measured with
# the peer emulated on one H200, bench_arrival.py), so both orders are named explicitly; Qwen3 added. Session 22's
# emulation predicts at EP=2: layer0 DSv3-like -7%, Qwen3 -5%, the backward's dispatch -9% / -7%, others within 3%.
source notes/device/common.sh
T='{"own_rows_first": true}'; E='{"own_rows_first": false}'
C="[$T, $E, $T, $E]"
for c in dsv3-like qwen3-30b-a3b qwen1.5-moe-a2.7b qwen2-57b-a14b mixtral-8x7b; do
  timeout 200 python -m torch.distributed.run --standalone --nproc-per-node=2 benchmarks/bench_layer.py \
    --cases $c --variants comet --comet-configs "$C" --out $OUT/$c > $OUT/own_rows_first_$c.log 2>&1
  echo "$c exit $? ($((SECONDS-T0)) s)"; grep -v -i warn $OUT/own_rows_first_$c.log | grep -E "comet" | tail -6
  mv $OUT/$c/bench_layer_ep2.json $OUT/own_rows_first_$c.json; rm -rf $OUT/$c
done
ls $OUT
