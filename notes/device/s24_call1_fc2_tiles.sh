# Session 24, call 1 (one GPU). fc2 ⊕ combine's tile shape by case: bench_gemm_core (two ranks simulated, rank 0's
# GEMM programs timed) with the default (128 wide + flattened below ffn 8192, 256 wide above) against every other
# combination of fc2_block_n {128, 256} x fc2_flatten, each twice, interleaved. fc2 and fc1_dgrad both use them
# (fc2: K = ffn; fc1_dgrad: K = 2 ffn).
# Prediction: Phi-3.5 (fc2 1.29x, fc1_dgrad 1.38x grouped_mm with 128 wide) gains from 256-wide tiles at least on
# fc1_dgrad (K 12800, longer than Mixtral's fc2 K 14336's cutoff suggests); Qwen2-57B's fc1_dgrad (K 5120) maybe;
# the short-K cases (Qwen1.5 / Qwen3 / DSv3 fc2) keep 128 + flatten.
source notes/device/common.sh
C='[{}, {"fc2_block_n": 256, "fc2_flatten": false}, {"fc2_block_n": 256, "fc2_flatten": true},
    {"fc2_block_n": 128, "fc2_flatten": false}, {"fc2_block_n": 128, "fc2_flatten": true},
    {}, {"fc2_block_n": 256, "fc2_flatten": false}, {"fc2_block_n": 256, "fc2_flatten": true},
    {"fc2_block_n": 128, "fc2_flatten": false}, {"fc2_block_n": 128, "fc2_flatten": true}]'
for case in phi3.5-moe qwen2-57b-a14b dsv3-like qwen1.5-moe-a2.7b qwen3-30b-a3b mixtral-8x7b; do
  timeout 150 python benchmarks/bench_gemm_core.py --case $case --ep 2 --configs "$C" --iters 15 --out /tmp/core \
    > /tmp/core_$case.log 2>&1
  echo "$case exit $? ($((SECONDS-T0)) s) exact: $(grep exact /tmp/core_$case.log | grep -c True)"
  cp /tmp/core/bench_gemm_core_$case.json $OUT/core_$case.json
done
python - <<'PY'
import glob, json, os
print(f"{'case':18} {'bn':>3} {'flat':>5} {'fc2':>6} {'fc1_dg':>7}   (ms; gm = torch._grouped_mm)")
for f in sorted(glob.glob(os.environ["OUT"] + "/core_*.json")):
    d = json.load(open(f)); b = d["baseline_ms"]
    print(f"{d['case']:18} gm        {b['gm_fc2']:6.3f} {b['gm_fc1_dgrad']:7.3f}")
    for c in d["configs"]:
        k = c["config"]
        print(f"{'':18} {k['fc2_block_n']:>3} {str(k['fc2_flatten']):>5} {c['ms']['fc2']:6.3f} {c['ms']['fc1_dgrad']:7.3f}")
PY
cd $OUT && tar czf cores.tgz core_*.json && rm -f core_*.json; ls $OUT
