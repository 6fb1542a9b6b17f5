# Session 18, call 1 (one GPU, carry .whl): the deferred expert weight gradients (COMET_WGRAD_DEFER, new) at EP=1.
# 1) GPU tests at EP=1: every fused case (regression of the weight-gradient refactor) and the new deferral test
#    (3 fused layers in a chain, 2 micro-batches, per_expert and kernel accumulation: main_grad bits equal for depth
#    0 / 1 / 3). 2) Mixtral, 2 layers, EP=1, 40 it.: Comet with WGRAD_DEFER=0 and =1 (and 0 again, interleaved).
# Predicted: tests pass; at EP=1 there is no cross-rank imbalance to absorb, so the steps agree within noise (+-1%)
# and the losses are bit-identical (same kernels, same sums); the gain needs EP=2 (s18_ep2_defer.sh).
source notes/device/common.sh
COMET_TEST_DEVICE=cuda timeout 420 python -m pytest -q -x tests/test_fused_gpu.py -m gpu -k "ep1" -p no:cacheprovider \
  > $OUT/gpu_tests_ep1.log 2>&1; echo "tests exit $? ($((SECONDS-T0)) s)"; tail -3 $OUT/gpu_tests_ep1.log
for run in "defer0 0" "defer1 1" "defer0b 0"; do set -- $run
  TRAIN_TIMEOUT=150 train_run mixtral_8x7b_2gpu.sh $1 WGRAD_DEFER=$2 LAYERS=2 EP=1 NPROC=1 ITERS=40 COMET_LAYER_TIMING=64
done
compare_train_runs $OUT defer0 defer1 defer0b
grep -E "fused +0 bwd|moe +0 bwd" $OUT/layer_timing.txt
python - <<'PY'
import re
losses = {n: re.findall(r"lm loss: ([\d.E+-]+)", open(f"/tmp/train/{n}.log").read()) for n in ("defer0", "defer1", "defer0b")}
print({n: len(v) for n, v in losses.items()}, "defer1 == defer0 losses (text):", losses["defer1"] == losses["defer0"],
      "defer0b == defer0:", losses["defer0b"] == losses["defer0"])
PY
tar czf $OUT/train_logs.tgz -C /tmp/train defer0.log defer1.log defer0b.log; ls $OUT
