# Session 18, call 3 (one GPU, carry .whl): final validation at EP=1 of the code after review fixes (in-place order
# without deferral, DDP drain installed whenever COMET_WGRAD_DEFER >= 1 with the overlap_grad_reduce guard).
# 1) every EP=1 fused GPU test (21, the deferral chain with its carried variant included); 2) Mixtral, 2 layers, EP=1,
# 20 it., WGRAD_DEFER=1 WGRAD_CARRY=1 and WGRAD_DEFER=0: losses equal to each other and to call 2's defer0 run.
# Predicted: 21 passed; losses identical (printed digits) across all three.
source notes/device/common.sh
COMET_TEST_DEVICE=cuda timeout 420 python -m pytest -q tests/test_fused_gpu.py -m gpu -k "ep1" -p no:cacheprovider \
  > $OUT/gpu_tests_ep1.log 2>&1; echo "tests exit $? ($((SECONDS-T0)) s)"; tail -1 $OUT/gpu_tests_ep1.log
for run in "carry1 WGRAD_DEFER=1 WGRAD_CARRY=1" "defer0 WGRAD_DEFER=0"; do set -- $run
  TRAIN_TIMEOUT=150 train_run mixtral_8x7b_2gpu.sh $1 $2 ${3:-} LAYERS=2 EP=1 NPROC=1 ITERS=20
done
mkdir -p /tmp/call2 && tar xzf benchmarks/results/s18/call2_carry_ep1/train_logs.tgz -C /tmp/call2
python - <<'PY'
import re
read = lambda path: re.findall(r"lm loss: ([\d.E+-]+)", open(path).read())
runs = {"carry1": read("/tmp/train/carry1.log"), "defer0": read("/tmp/train/defer0.log"),
        "call2_defer0": read("/tmp/call2/defer0.log")[:20]}
print({n: len(v) for n, v in runs.items()}, "all equal:", runs["carry1"] == runs["defer0"] == runs["call2_defer0"])
t = {n: re.findall(r"elapsed time per iteration \(ms\): ([\d.]+)", open(f"/tmp/train/{n}.log").read()) for n in ("carry1", "defer0")}
import statistics as st
print({n: round(st.median(map(float, v[5:])), 1) for n, v in t.items()})
PY
tar czf $OUT/train_logs.tgz -C /tmp/train carry1.log defer0.log; ls $OUT
