# Session 18, prepared for nvidia-h200-x2 (carry .whl; ~500 s): deferred expert weight gradients at EP=2, call A.
# Session 17's 100-iteration Mixtral pair: 678.5 vs 632.4 ms/step (1.073x); in situ a layer's backward lasts as long as
# its busiest rank's data + weight gradients (rows per call: mean 8192, busiest 10352) and the lighter rank waits in
# the forward's reduce. notes/models/wgrad_defer_model.py --step predicts per MoE call -0.56 ms for WGRAD_DEFER=1 and
# -0.90 ms with WGRAD_CARRY=1 (the leftovers run in the next forward's waits), i.e. ~-9 / -14 ms per step.
# 1) the EP=2 deferral GPU test (variants 0 / 1 / 3 / 1 carried, both accumulation methods: equal main_grad bits);
# 2) 100 iterations each: Megatron, Comet WGRAD_DEFER=1 WGRAD_CARRY=1, Comet WGRAD_DEFER=0 (the check is
# Megatron vs Comet). Predicted: test passes; carry 615-622 ms/step vs defer0 ~632; losses of carry and defer0 equal
# to the printed digits (same sums, same order per parameter).
source notes/device/common.sh
COMET_TEST_DEVICE=cuda timeout 200 python -m pytest -q tests/test_fused_gpu.py -m gpu -k "deferred and ep2" \
  -p no:cacheprovider > $OUT/gpu_test_defer_ep2.log 2>&1; echo "test exit $? ($((SECONDS-T0)) s)"; tail -1 $OUT/gpu_test_defer_ep2.log
TRAIN_TIMEOUT=170 train_run mixtral_8x7b_2gpu.sh megatron COMET=0 ITERS=100
TRAIN_TIMEOUT=170 train_run mixtral_8x7b_2gpu.sh carry1 WGRAD_DEFER=1 WGRAD_CARRY=1 ITERS=100
TRAIN_TIMEOUT=170 train_run mixtral_8x7b_2gpu.sh defer0 WGRAD_DEFER=0 ITERS=100
python examples/compare_runs.py /tmp/train/megatron.log /tmp/train/carry1.log /tmp/train/defer0.log \
  --labels megatron carry1 defer0 --skip 5 --json $OUT/train_compare.json --png $OUT/mixtral_defer_compare.png | tail -4
python notes/device/s18_windows.py megatron carry1 defer0
tar czf $OUT/train_logs.tgz -C /tmp/train megatron.log carry1.log defer0.log; ls $OUT
