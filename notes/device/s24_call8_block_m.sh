# Session 24, call 8 (one GPU). block_m 64 re-measured (session 8 found it slower on every fine-grained case, before
# TMA loads, split epilogues, 16-byte peer stores and today's 256-wide tiles): half the M padding per expert where an
# expert holds a few hundred rows. bench_gemm_core --ep 2, the fine-grained cases and Phi, block_m 128 / 64 (8 warps)
# / 64 (4 warps), twice.
# Prediction: 64 still loses on fc1 / the data-gradient (wgmma m64 per warpgroup halves the work per weight load);
# maybe even on DSv3-like (2 M-tiles per expert).
source notes/device/common.sh
nvidia-smi --query-gpu=name --format=csv,noheader
C='[{}, {"block_m": 64}, {"block_m": 64, "num_warps": 4}, {}, {"block_m": 64}, {"block_m": 64, "num_warps": 4}]'
for case in dsv3-like qwen3-30b-a3b qwen1.5-moe-a2.7b qwen2-57b-a14b; do
  timeout 120 python benchmarks/bench_gemm_core.py --case $case --ep 2 --configs "$C" --iters 15 --out /tmp/core \
    > /tmp/core_$case.log 2>&1
  echo "$case exit $? ($((SECONDS-T0)) s) exact: $(grep exact /tmp/core_$case.log | grep -c True)"
  cp /tmp/core/bench_gemm_core_$case.json $OUT/core_bm_$case.json
done
python - <<'PY'
import glob, json, os
ks = ("fc1", "fc1+push", "fc2", "fc2_dgrad", "fc1_dgrad")
for f in sorted(glob.glob(os.environ["OUT"] + "/core_bm_*.json")):
    d = json.load(open(f))
    for c in d["configs"]:
        k = c["config"]
        print(f"{d['case']:18} bm {k['block_m']:>3} w {k['num_warps']} " + " ".join(f"{x} {c['ms'][x]:.3f}" for x in ks)
              + f"  all {sum(c['ms'][x] for x in ks if x != 'fc1+push'):.3f}")
PY
