# Session 16, call 7 (one GPU). A fresh per-kernel breakdown of the layer at EP=1 with the current code (the last one is
# session 7's, before the routing kernels, the GPU plan, the flattened fc2, the fast launch and the early launch):
# bench_layer --profile-kernels on Mixtral at 4096 tokens (the training shape) and Qwen1.5-MoE / DSv3-like at their
# issue shapes, comet beside megatron; Chrome traces summarized for busy / idle (host-paced forward of the
# fine-grained cases).
# Prediction: Mixtral fwd+bwd kernels within ~5% of the wall, each GEMM kernel 1.2-1.3x its floor; Qwen1.5 and DSv3
# with 15-30% of the wall idle (the host path), nearly all of it in the forward.
source notes/device/common.sh
for run in "4096 mixtral-8x7b" "0 qwen1.5-moe-a2.7b,dsv3-like"; do
  set -- $run
  T=$([ "$1" = 0 ] && echo "" || echo "--tokens $1")
  timeout 200 python -m torch.distributed.run --standalone --nproc-per-node=1 benchmarks/bench_layer.py --cases $2 $T \
    --variants megatron,comet --profile-kernels 5 --trace-dir /tmp/traces --out /tmp/prof_$1 > /tmp/prof_$1.log 2>&1
  echo "profile $2 exit $? ($((SECONDS-T0)) s)"
  grep -v -i warn /tmp/prof_$1.log | grep -A14 "comet: kernels" | cut -c1-150 | head -45
done
ls /tmp/traces
for t in /tmp/traces/*comet*; do
  python benchmarks/trace_summary.py $t --top 6 > /tmp/ts_$(basename $t).txt 2>&1; head -8 /tmp/ts_$(basename $t).txt
done
cp /tmp/prof_*/*.json $OUT/ 2>/dev/null; cat /tmp/prof_*.log /tmp/ts_*.txt > $OUT/profile_all.log 2>/dev/null; ls $OUT
