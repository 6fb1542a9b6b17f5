# Session 23, call 3 (one GPU). The aligned peer stores (call 2: bench_gemm_core fc2 -15..-21% on Mixtral / Qwen1.5 /
# Qwen3, fc1 data-gradient -7..-19%, but Phi +3% / +10% in both rounds) in the EP=1 layer: per-kernel GPU ms of
# fwd+bwd (bench_layer --profile-kernels), A = tmp/ab_old, B = this tree, interleaved twice; then Phi's and Mixtral's
# cores again, four rounds each, to tell a Phi regression from noise.
# Prediction: fc2_combine_kernel (two calls per fwd+bwd) -5..-15% on Mixtral / Qwen1.5 / Qwen3, dispatch kernels -3..-10%
# on Qwen1.5 / Qwen3 (their push programs bound them); Phi within +-5%.
source notes/device/common.sh
CASES=mixtral-8x7b,phi3.5-moe,qwen1.5-moe-a2.7b,qwen3-30b-a3b
round=0
for v in old new old new; do
  round=$((round + 1))
  root=$PWD; [ $v = old ] && root=$PWD/tmp/ab_old
  PYTHONPATH=/tmp/site:$root timeout 130 python -m torch.distributed.run --standalone --nproc-per-node=1 \
    $root/benchmarks/bench_layer.py --cases $CASES --tokens 4096 --variants comet --profile-kernels 5 \
    --iters 10 --out /tmp/layer_${round}_$v > /tmp/layer_${round}_$v.log 2>&1
  echo "layer $round $v exit $? ($((SECONDS-T0)) s)"
  cp /tmp/layer_${round}_$v/bench_layer_ep1.json $OUT/layer_${round}_$v.json
done
python - <<'PY'
import glob, json, os, statistics, collections
out = os.environ["OUT"]
ms = collections.defaultdict(list)
for f in sorted(glob.glob(f"{out}/layer_*.json")):
    v = f.rsplit("_", 1)[1][:-5]
    for case, entry in json.load(open(f))["cases"].items():
        kern = entry["variants"]["comet"].get("kernels_ms", {})
        for name, t in kern.items():
            if any(k in name for k in ("dispatch_fc1", "dispatch_dgrad", "fc2_combine", "_all")):
                ms[(case, name[:40], v)].append(t)
for (case, name, v) in sorted(k for k in ms if k[2] == "old"):
    o, n = statistics.mean(ms[(case, name, "old")]), statistics.mean(ms.get((case, name, "new"), [float("nan")]))
    print(f"{case:<20} {name:<40} old {o:7.3f} new {n:7.3f} {100 * (n / o - 1):+5.1f}%  rounds {ms[(case, name, 'old')]} {ms.get((case, name, 'new'))}")
PY
for c in phi3.5-moe mixtral-8x7b; do
  for v in old new old new old new old new; do
    script=benchmarks/bench_gemm_core.py; [ $v = old ] && script=tmp/ab_old/benchmarks/bench_gemm_core.py
    timeout 60 python $script --case $c --ep 2 --iters 15 --out /tmp/core_$v > /tmp/core_${c}_$v.log 2>&1
    echo "$c $v $(grep -E '^(fc2 |fc1_dgrad|fc1\+push)' /tmp/core_${c}_$v.log | awk '{print $1, $3}' | tr '\n' ' ')"
  done
done
cd $OUT && tar czf layers.tgz layer_*.json && rm -f layer_*.json; ls $OUT
