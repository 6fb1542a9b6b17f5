# Session 16, call 8 (one GPU). Does layer0's row gather limit the fine-grained cases? Every row a rank's experts
# receive is copied into the expert-major buffer by the push programs, local rows included, but the default split
# (tuning.default_config) counts only the rows that leave the rank: at EP=1 it gives 16 programs for 134 MB (Qwen3 at
# 4096 tokens), which at ~20 GB/s per program would take ~0.4-0.5 ms while the fc1 GEMM needs ~0.3; in Qwen3 training
# dispatch_fc1 takes 1.0 ms per call. bench_layer at EP=1, comet with comm_programs 16 (default) / 32 / 48 / 64 on
# Qwen3-30B-A3B (4096 tokens), Qwen1.5-MoE, DSv3-like, and Mixtral at 4096 as control.
# Prediction: fine-grained forward -10 to -25% at 32-48 programs; Mixtral flat or slightly slower.
source notes/device/common.sh
CFG='[{"comm_programs":16},{"comm_programs":32},{"comm_programs":48},{"comm_programs":64}]'
for run in "4096 qwen3-30b-a3b,mixtral-8x7b" "0 qwen1.5-moe-a2.7b,dsv3-like"; do
  set -- $run
  T=$([ "$1" = 0 ] && echo "" || echo "--tokens $1")
  timeout 240 python -m torch.distributed.run --standalone --nproc-per-node=1 benchmarks/bench_layer.py --cases $2 $T \
    --variants comet --comet-configs "$CFG" --out /tmp/comm_$1 > /tmp/comm_$1.log 2>&1
  echo "sweep $2 exit $? ($((SECONDS-T0)) s)"
  grep -v -i warn /tmp/comm_$1.log | grep -B1 -A8 "^case " | cut -c1-110
  cp /tmp/comm_$1/bench_layer_ep1.json $OUT/comm_programs_ep1_$1.json
done
cat /tmp/comm_*.log > $OUT/comm_programs_ep1.log; ls $OUT
