# Session 25, call 3 (one GPU). Calls 1-2: the accumulating kernel costs gemm + rmw even where the board is not at its
# power cap (DSv3-like: 11.3 ms against 4.3 + 7.1, 675 W); more programs per SM (BM 64, 2 stages) did not change that.
# Each program ends by handing its fp32 tile to a TMA bulk reduce and waiting for it to complete
# (cp.async.bulk.wait_group 0) before it exits, so an SM's next tile starts only after the read-modify-write's round
# trip. REDUCE_BY_ATOMICS=2 adds the tile with red.global.add(.v2).f32 instead: fire-and-forget reductions that the L2
# performs while the SM goes on (=1: tl.atomic_add, which Triton 3.6 emits as atom with a return value).
# Prediction: =2 −15..−30% on DSv3-like / Qwen3 / Qwen1.5 (rmw-bound), within ±5% on Phi / Qwen2-57B / Mixtral
# (power-bound); =1 between.
source notes/device/common.sh
nvidia-smi --query-gpu=name --format=csv,noheader
K='[{"REDUCE_BY_ATOMICS": 2}, {"REDUCE_BY_ATOMICS": 1}, {}, {"REDUCE_BY_ATOMICS": 2}, {"REDUCE_BY_ATOMICS": 2, "BM": 64}]'
timeout 200 python benchmarks/bench_wgrad.py --cases dsv3-like,qwen3-30b-a3b,qwen1.5-moe-a2.7b,qwen2-57b-a14b,phi3.5-moe,mixtral-8x7b \
  --ep 2 --tokens 4096 --routing random --per-expert-streams 3 --kernel-configs "$K" --iters 10 --out /tmp/wr \
  > $OUT/wgrad_red.log 2>&1
echo "wgrad red exit $? ($((SECONDS-T0)) s)"; cp /tmp/wr/bench_wgrad.json $OUT/bench_wgrad_red.json
python - <<'PY'
import json, os
labels = ["default", "red", "atomic", "default", "red", "red bm64"]
d = json.load(open(os.environ["OUT"] + "/bench_wgrad_red.json"))
print(" | ".join(labels))
for case, v in d["cases"].items():
    for g in ("fc1", "fc2"):
        x = v[g]
        ks = " ".join(f"{x['kernel' if i == 0 else f'kernel#{i}']['ms']:.3f}" for i in range(len(labels)))
        errs = " ".join(f"{x['rel_err_kernel' + ('' if i == 0 else f'#{i}')]:.1e}" for i in range(len(labels)))
        print(f"{case:18s} {g} rows/e {x['rows_per_expert']:5d} gm {x['grouped_mm']['ms']:.3f} "
              f"pe3 {x['per_expert_3streams']['ms']:.3f} | {ks}  err {errs}")
PY
COMET_TEST_DEVICE=cuda timeout 330 python -m pytest -q -p no:cacheprovider tests/test_wgrad_kernel.py -m gpu \
  > $OUT/gpu_tests_wgrad.log 2>&1
echo "wgrad GPU tests exit $? ($((SECONDS-T0)) s)"; grep -E "passed|failed|FAIL|Error" $OUT/gpu_tests_wgrad.log | tail -3
