# Session 25, call 1 (one GPU). The accumulating weight gradients take about the bf16 GEMM's time plus the time of
# their fp32 main_grad traffic (s24 bench_wgrad: kernel ≈ grouped_mm + 8 B/param at HBM rate on every shape), i.e.
# nothing of the read-modify-write hides under the GEMM. (1) benchmarks/probes/wgrad_overlap.py: can the GPU overlap a
# grouped GEMM with an independent 8 B/param read-modify-write at all (two streams), with SM clock and power sampled;
# (2) the kernel's TAIL_BY_TMA (the expert's partial last chunk by TMA instead of masked pointer loads) against the
# default, bench_wgrad, five shapes, interleaved twice; (3) the wgrad GPU tests with it.
# Prediction: both ≈ max(gemm, rmw) + 10% (the overlap exists; the kernel's serialisation is its design);
# TAIL_BY_TMA −3..−10% on the shapes with few rows per expert (DSv3-like, Qwen3, Qwen1.5), ±2% on Mixtral / Phi.
source notes/device/common.sh
nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv,noheader
COMET_TEST_DEVICE=cuda timeout 200 python -m pytest -q -p no:cacheprovider tests/test_wgrad_kernel.py -m gpu \
  > $OUT/gpu_tests_wgrad.log 2>&1
echo "wgrad GPU tests exit $? ($((SECONDS-T0)) s)"; grep -E "passed|failed|FAIL|Error" $OUT/gpu_tests_wgrad.log | tail -3
timeout 240 python benchmarks/probes/wgrad_overlap.py --out /tmp/ov > $OUT/wgrad_overlap.log 2>&1
echo "overlap probe exit $? ($((SECONDS-T0)) s)"; cp /tmp/ov/wgrad_overlap.json $OUT/ 2>/dev/null
grep -v -i warn $OUT/wgrad_overlap.log | tail -8
K='[{"TAIL_BY_TMA": true}, {}, {"TAIL_BY_TMA": true}]'
timeout 200 python benchmarks/bench_wgrad.py --cases qwen2-57b-a14b,dsv3-like,qwen1.5-moe-a2.7b,qwen3-30b-a3b,phi3.5-moe \
  --ep 2 --tokens 4096 --routing random --per-expert-streams 3 --kernel-configs "$K" --iters 10 --out /tmp/wt \
  > $OUT/wgrad_tail.log 2>&1
echo "wgrad tail exit $? ($((SECONDS-T0)) s)"; cp /tmp/wt/bench_wgrad.json $OUT/bench_wgrad_tail.json 2>/dev/null
python - <<'PY'
import json, os
d = json.load(open(os.environ["OUT"] + "/bench_wgrad_tail.json"))
for case, v in d["cases"].items():
    for g in ("fc1", "fc2"):
        x = v[g]
        ks = " ".join(f"{k} {x[k]['ms']:.3f}" for k in ("kernel", "kernel#1", "kernel#2", "kernel#3"))
        print(f"{case:18s} {g} rows/e {x['rows_per_expert']:5d} gm {x['grouped_mm']['ms']:.3f} "
              f"pe3 {x['per_expert_3streams']['ms']:.3f} | {ks}  (#1, #3: TAIL_BY_TMA) err {x['rel_err_kernel#1']:.1e}")
PY
