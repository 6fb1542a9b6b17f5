# Session 16, call 9 (one GPU). Call 8's layer times moved within the host-paced benchmark's noise (two runs of the same
# default config differed by 36% on Qwen3's forward), so measure the kernels themselves: bench_layer
# --profile-kernels 5 at EP=1 on Qwen3-30B-A3B (4096 tokens) and Qwen1.5-MoE, comet with comm_programs 16 (default)
# / 48, twice each, interleaved; dispatch_fc1_kernel's GPU ms per call is the number.
# Prediction: dispatch_fc1 -15 to -30% at 48 programs if the gather limits it; otherwise within +-5%.
source notes/device/common.sh
CFG='[{"comm_programs":16},{"comm_programs":48},{"comm_programs":16},{"comm_programs":48}]'
for run in "4096 qwen3-30b-a3b" "0 qwen1.5-moe-a2.7b"; do
  set -- $run
  T=$([ "$1" = 0 ] && echo "" || echo "--tokens $1")
  timeout 200 python -m torch.distributed.run --standalone --nproc-per-node=1 benchmarks/bench_layer.py --cases $2 $T \
    --variants comet --comet-configs "$CFG" --profile-kernels 5 --out /tmp/k_$1 > /tmp/k_$1.log 2>&1
  echo "profile $2 exit $? ($((SECONDS-T0)) s)"
  grep -v -i warn /tmp/k_$1.log | grep -E "kernels, ms per|dispatch_fc1_kernel|fc2_combine_kernel" | cut -c1-100
  cp /tmp/k_$1/bench_layer_ep1.json $OUT/comm_kernels_ep1_$1.json
done
cat /tmp/k_*.log > $OUT/comm_kernels_ep1.log; ls $OUT
