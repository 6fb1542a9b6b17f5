# Session 18, call 2 (one GPU, carry .whl): carrying deferred weight gradients into the next forward
# (COMET_WGRAD_CARRY, new) at EP=1. 1) the deferral GPU test at EP=1 (chain of 3 fused layers, variants 0 / 1 / 3 /
# 1 carried; per_expert and kernel accumulation: main_grad bits equal). 2) Mixtral, 2 layers, EP=1, 40 it.: WGRAD_DEFER=1
# WGRAD_CARRY=1 against WGRAD_DEFER=0 -- in real Megatron training the carried jobs are drained by the hook on Megatron's
# DDP (finish_grad_sync) before gradients are reduced. Predicted: test passes; losses identical at every iteration
# (same sums, same order per parameter); steps within +-1% (at EP=1 no forward wait to fill: the carried jobs run at
# the next backward or at the drain).
source notes/device/common.sh
COMET_TEST_DEVICE=cuda timeout 300 python -m pytest -q tests/test_fused_gpu.py -m gpu -k "deferred and ep1" \
  -p no:cacheprovider > $OUT/gpu_test_defer_ep1.log 2>&1; echo "test exit $? ($((SECONDS-T0)) s)"; tail -1 $OUT/gpu_test_defer_ep1.log
for run in "carry1 WGRAD_DEFER=1 WGRAD_CARRY=1" "defer0 WGRAD_DEFER=0"; do set -- $run
  TRAIN_TIMEOUT=150 train_run mixtral_8x7b_2gpu.sh $1 $2 ${3:-} LAYERS=2 EP=1 NPROC=1 ITERS=40
done
compare_train_runs $OUT defer0 carry1
grep -h "max allocated" /tmp/train/carry1.log /tmp/train/defer0.log | tail -2 | cut -c1-160
grep -c "moe-comet-wgrad-carry\|moe_comet_wgrad_carry .* True" /tmp/train/carry1.log
python - <<'PY'
import re
losses = {n: re.findall(r"lm loss: ([\d.E+-]+)", open(f"/tmp/train/{n}.log").read()) for n in ("defer0", "carry1")}
print({n: len(v) for n, v in losses.items()}, "carry1 == defer0 losses (printed digits):", losses["carry1"] == losses["defer0"])
PY
tar czf $OUT/train_logs.tgz -C /tmp/train defer0.log carry1.log; ls $OUT
