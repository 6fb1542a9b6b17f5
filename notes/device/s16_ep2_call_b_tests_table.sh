# Session 16, prepared for nvidia-h200-x2 (carry .whl): the EP=2 GPU tests with sessions 15-16's changes (fused layer
# == reference for every case, both backward modes; the early launch runs from each case's second call on), then the
# five-case table at EP=2 (Megatron / NCCL+_grouped_mm / Comet, fwd and fwd+bwd, peak memory).
# 3. Session 16's push split at EP=2 (Qwen1.5 new vs old counts, kernel profile).
# Predicted: all pass; the table within noise of session 14's (the layer benchmark syncs the host every iteration,
# so neither the early launch nor the push shows there beyond the removed all_to_all's ~0.1-0.3 ms per backward).
source notes/device/common.sh
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 300 python -m pytest -q -p no:cacheprovider --durations=3 \
  tests/test_fused_gpu.py -m gpu -k ep2 > $OUT/gpu_tests_ep2.log 2>&1
echo "GPU tests exit $? ($((SECONDS-T0)) s)"; grep -E "passed|failed|FAIL|Error" $OUT/gpu_tests_ep2.log | tail -6
timeout 240 python -m torch.distributed.run --standalone --nproc-per-node=2 benchmarks/bench_layer.py \
  --cases mixtral-8x7b,qwen1.5-moe-a2.7b,qwen2-57b-a14b,phi3.5-moe,dsv3-like --variants megatron,nccl_grouped_mm,comet \
  --out $OUT > $OUT/bench_layer_ep2.log 2>&1
echo "bench exit $? ($((SECONDS-T0)) s)"; grep -v -i warn $OUT/bench_layer_ep2.log | grep -A22 "^case " | head -24
# session 16's push split at EP=2, kernel level: Qwen1.5 with the new default (41 / 44) vs its old split (35 / 35)
timeout 90 python -m torch.distributed.run --standalone --nproc-per-node=2 benchmarks/bench_layer.py \
  --cases qwen1.5-moe-a2.7b --variants comet --comet-configs '[{"comm_programs":35,"dgrad_comm_programs":35}]' \
  --profile-kernels 5 --out $OUT/split > $OUT/split_ep2.log 2>&1
echo "split exit $? ($((SECONDS-T0)) s)"
grep -v -i warn $OUT/split_ep2.log | grep -E "kernels, ms per|dispatch_fc1_kernel|dispatch_dgrad_kernel" | cut -c1-100
ls $OUT
