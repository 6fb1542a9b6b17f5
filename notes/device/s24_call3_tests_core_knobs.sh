# Session 24, call 3 (one GPU). GPU tests at EP=1 with fc2 ⊕ combine 256 wide + flattened as the default (and the two
# hidden-384 cases: 1.5 default tiles; 128 wide with the loops apart). Then the other GEMM knobs that the defaults fix
# by shape and nobody re-measured since the TMA / 16-byte-store / flattening changes: group_m 4 / 8 / 16 (every
# kernel's tile order), epilogue_split 1 / 2, dgrad_block_n 128 / 256, bench_gemm_core two ranks simulated, each twice.
# Prediction: tests pass; group_m and epilogue_split within noise; dgrad_block_n as the default picks (128 only for
# Qwen1.5 / Qwen3).
source notes/device/common.sh
nvidia-smi --query-gpu=name --format=csv,noheader
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 280 python -m pytest -q -p no:cacheprovider tests/test_fused_gpu.py \
  -m gpu -k ep1 > $OUT/gpu_tests_ep1.log 2>&1
echo "GPU tests exit $? ($((SECONDS-T0)) s)"; grep -E "passed|failed|FAIL|Error" $OUT/gpu_tests_ep1.log | tail -4
C='[{}, {"group_m": 4}, {"group_m": 16}, {"epilogue_split": 1}, {"dgrad_block_n": 128}, {"dgrad_block_n": 256},
    {}, {"group_m": 4}, {"group_m": 16}, {"epilogue_split": 1}, {"dgrad_block_n": 128}, {"dgrad_block_n": 256}]'
for case in phi3.5-moe qwen2-57b-a14b dsv3-like qwen1.5-moe-a2.7b qwen3-30b-a3b mixtral-8x7b; do
  timeout 150 python benchmarks/bench_gemm_core.py --case $case --ep 2 --configs "$C" --iters 15 --out /tmp/core \
    > /tmp/core_$case.log 2>&1
  echo "$case exit $? ($((SECONDS-T0)) s) exact: $(grep exact /tmp/core_$case.log | grep -c True)"
  cp /tmp/core/bench_gemm_core_$case.json $OUT/core_$case.json
done
python - <<'PY'
import glob, json, os
ks = ("fc1", "fc1+push", "fc2", "fc2_dgrad", "fc1_dgrad")
print(f"{'case':18} {'g':>2} {'es':>2} {'dbn':>3} " + " ".join(f"{k:>9}" for k in ks))
for f in sorted(glob.glob(os.environ["OUT"] + "/core_*.json")):
    d = json.load(open(f)); b = d["baseline_ms"]
    print(f"{d['case']:18} gm         " + " ".join(f"{b.get('gm_' + k, float('nan')):9.3f}" for k in ks))
    for c in d["configs"]:
        k = c["config"]
        print(f"{'':18} {k['group_m']:>2} {k['epilogue_split']:>2} {k['dgrad_block_n']:>3} "
              + " ".join(f"{c['ms'][x]:9.3f}" for x in ks))
PY
cd $OUT && tar czf cores.tgz core_*.json && rm -f core_*.json; ls $OUT
