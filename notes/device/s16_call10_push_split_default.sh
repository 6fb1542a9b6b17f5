# Session 16, call 10 (one GPU). The push programs' share now counts every row the experts receive (local rows at the
# measured per-program gather rate) and the backward's dispatch gets its own share (dgrad_comm_programs, against the
# fc2 data-gradient's FLOPs): at EP=1 Qwen3-30B-A3B 32 / 44 programs (was 16 / 16), Qwen1.5-MoE 20 / 35, DSv3-like
# 16 / 26; Mixtral unchanged (16 / 16). EP=1 fused GPU tests; kernel profile new default vs the old split
# (comet_cfg0) on Qwen3 (4096 tokens), Qwen1.5, DSv3; Qwen3 training at EP=1, 2 layers, 25 it., new / old / new.
# Prediction: Qwen3 dispatch_fc1 ~0.79 -> ~0.58 ms, dispatch_dgrad 0.71 -> ~0.36; Qwen1.5 dgrad 0.70 -> ~0.50, fc1
# flat; DSv3 dgrad -10 to -30%; in Qwen3 training MoE fwd + bwd -0.4 to -0.6 ms per call; losses identical.
source notes/device/common.sh
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 200 python -m pytest -q -p no:cacheprovider tests/test_fused_gpu.py \
  -m gpu -k 'not ep2' > $OUT/gpu_tests.log 2>&1
echo "tests exit $? ($((SECONDS-T0)) s)"; tail -2 $OUT/gpu_tests.log
OLD='{"comm_programs":16,"dgrad_comm_programs":16}'
for run in "4096 qwen3-30b-a3b" "0 qwen1.5-moe-a2.7b,dsv3-like"; do
  set -- $run
  T=$([ "$1" = 0 ] && echo "" || echo "--tokens $1")
  timeout 200 python -m torch.distributed.run --standalone --nproc-per-node=1 benchmarks/bench_layer.py --cases $2 $T \
    --variants comet --comet-configs "[$OLD]" --profile-kernels 5 --out /tmp/k_$1 > /tmp/k_$1.log 2>&1
  echo "profile $2 exit $? ($((SECONDS-T0)) s)"
  grep -v -i warn /tmp/k_$1.log | grep -E "kernels, ms per|dispatch_fc1_kernel|dispatch_dgrad_kernel" | cut -c1-100
  cp /tmp/k_$1/bench_layer_ep1.json $OUT/push_split_ep1_$1.json
done
TRAIN_TIMEOUT=110
for label in new_a old new_b; do
  cfg=$([ $label = old ] && echo "$OLD" || echo "")
  train_run qwen3_30b_a3b_2gpu.sh $label COMET_KERNEL_CONFIG="$cfg" COMET_LAYER_TIMING=64 LAYERS=2 EP=1 NPROC=1 ITERS=25
done
compare_train_runs $OUT new_a old new_b
grep -E "dispatch_fc1|dispatch_dgrad| moe " $OUT/layer_timing.txt | grep -v Warn
cat /tmp/k_*.log > $OUT/push_split_profile.log; ls $OUT
