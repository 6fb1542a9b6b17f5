# Session 18, call 4 (one GPU, carry .whl): deferred + carried weight gradients with MoE-layer recompute (whose
# reentrant checkpoint runs each MoE layer's backward as a nested autograd pass) and alternating dense / MoE layers.
# Mixtral shapes, 4 layers with MOE_FREQ=2 (2 MoE), RECOMPUTE=1, EP=1, 15 it.: WGRAD_DEFER=1 WGRAD_CARRY=1 vs
# WGRAD_DEFER=0. Predicted: losses identical at every iteration (same sums; the nested passes' ends only run or keep
# jobs, never drop them), steps within +-1%.
source notes/device/common.sh
for run in "carry1 WGRAD_DEFER=1 WGRAD_CARRY=1" "defer0 WGRAD_DEFER=0"; do set -- $run
  TRAIN_TIMEOUT=160 train_run mixtral_8x7b_2gpu.sh $1 $2 ${3:-} LAYERS=4 MOE_FREQ=2 RECOMPUTE=1 EP=1 NPROC=1 ITERS=15
done
python examples/compare_runs.py /tmp/train/defer0.log /tmp/train/carry1.log --labels defer0 carry1 --skip 5 \
  --json $OUT/train_compare.json | tail -3
python - <<'PY'
import re
read = lambda n: re.findall(r"lm loss: ([\d.E+-]+)", open(f"/tmp/train/{n}.log").read())
a, b = read("carry1"), read("defer0")
print(len(a), len(b), "carry1 == defer0 losses (printed digits):", a == b)
PY
grep -E "recompute_granularity|moe_layer_freq|moe_comet_wgrad" /tmp/train/carry1.log | head -5
tar czf $OUT/train_logs.tgz -C /tmp/train defer0.log carry1.log; ls $OUT
