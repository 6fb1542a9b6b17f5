# Session 17, call 8 (one GPU, carry .whl): does the Mixtral speedup fall over a run at EP=1 too? At EP=2 (call 7) the
# ratio went 1.089x (iterations 6-60) -> 1.068x (61-100) as Megatron's step shortened more than Comet's. EP=1 has no
# cross-rank imbalance: if the ratio falls there as well, the cause is not the routing balance between ranks.
# 2 Mixtral layers, EP=1, 100 it., COMET_LAYER_TIMING=64 on both (a report = 4 iterations of 16 MoE calls),
# layer windows reports 3-15 / 16-25. Predicted: the ratio holds within +-1.5% between the windows at EP=1.
source notes/device/common.sh
TRAIN_TIMEOUT=200 train_run mixtral_8x7b_2gpu.sh megatron COMET=0 COMET_LAYER_TIMING=64 LAYERS=2 EP=1 NPROC=1 ITERS=100
TRAIN_TIMEOUT=200 train_run mixtral_8x7b_2gpu.sh comet COMET_LAYER_TIMING=64 LAYERS=2 EP=1 NPROC=1 ITERS=100
python examples/compare_runs.py /tmp/train/megatron.log /tmp/train/comet.log --labels megatron comet --skip 5 \
  --json $OUT/train_compare.json | tail -3
python - <<'PY'
import re, statistics as st
t = {n: [float(m[1]) for m in re.finditer(r"elapsed time per iteration \(ms\): ([\d.]+)", open(f"/tmp/train/{n}.log").read())]
     for n in ("megatron", "comet")}
for a, b in ((5, 60), (60, 100)):
    m, c = st.median(t["megatron"][a:b]), st.median(t["comet"][a:b])
    print(f"iterations {a + 1}-{b}: megatron {m:.1f} comet {c:.1f} ms/step, {m / c:.3f}x")
print("10-iteration medians megatron", [round(st.median(t["megatron"][i:i + 10])) for i in range(0, 100, 10)])
print("10-iteration medians comet   ", [round(st.median(t["comet"][i:i + 10])) for i in range(0, 100, 10)])
PY
for w in "2 15 early" "15 25 late"; do set -- $w
  python -m comet_megatron.megatron.layer_timing /tmp/train/megatron.log /tmp/train/comet.log --skip-reports $1 \
    --last-report $2 --json $OUT/layer_timing_$3.json > $OUT/layer_timing_$3.txt 2>&1
  echo "== $3 (reports $(($1 + 1))-$2)"; grep -E " (moe|attention) " $OUT/layer_timing_$3.txt
done
tar czf $OUT/train_logs.tgz -C /tmp/train megatron.log comet.log; ls $OUT
