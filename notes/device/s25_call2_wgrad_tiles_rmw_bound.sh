# Session 25, call 2 (one GPU). Call 1 showed the accumulating weight gradients at gemm + rmw (no overlap) on every
# shape, and why on the GEMM-bound ones: the bf16 GEMM alone already runs at the board's 700 W cap (SM clock 1410-1740
# MHz), so added HBM traffic slows it (energy bound ≈ gemm + 0.67 rmw; per-expert cuBLAS is there on Phi / Qwen2-57B).
# On the read-modify-write-bound shapes (DSv3-like: rmw 7.1 ms, gemm 4.3 ms, kernel 11.3 ms at 675 W / 1965 MHz) the
# power is not the limit: the kernel keeps too little HBM traffic in flight (two 128x128 programs per SM, register
# bound). Tiles that fit more programs per SM: BM 64 (half the accumulator registers), 2 stages, BK 32, BN 64.
# Prediction: a BM 64 tile −10..−20% on DSv3-like, Qwen3 and Qwen1.5 (many experts, few rows each); no change or
# slower on Qwen2-57B / Phi (GEMM-bound).
source notes/device/common.sh
nvidia-smi --query-gpu=name --format=csv,noheader
K='[{"num_stages": 2}, {"BM": 64}, {"BM": 64, "num_stages": 2}, {"BN": 64}, {"BM": 64, "BN": 64}, {"BK": 32}, {"BM": 64, "BK": 32, "num_stages": 4}, {"PREFETCH_GRAD": 0}, {}]'
for round in 1 2; do
  timeout 230 python benchmarks/bench_wgrad.py --cases dsv3-like,qwen3-30b-a3b,qwen1.5-moe-a2.7b,qwen2-57b-a14b \
    --ep 2 --tokens 4096 --routing random --per-expert-streams 3 --kernel-configs "$K" --iters 10 --out /tmp/wt$round \
    > $OUT/wgrad_tiles_$round.log 2>&1
  echo "wgrad tiles round $round exit $? ($((SECONDS-T0)) s)"; cp /tmp/wt$round/bench_wgrad.json $OUT/bench_wgrad_tiles_$round.json
done
python - <<'PY'
import json, os
labels = ["default", "st2", "bm64", "bm64 st2", "bn64", "bm64 bn64", "bk32", "bm64 bk32 st4", "no prefetch", "default"]
for r in (1, 2):
    d = json.load(open(os.environ["OUT"] + f"/bench_wgrad_tiles_{r}.json"))
    print(f"round {r}: " + " | ".join(labels))
    for case, v in d["cases"].items():
        for g in ("fc1", "fc2"):
            x = v[g]
            ks = " ".join(f"{x['kernel' if i == 0 else f'kernel#{i}']['ms']:.3f}" for i in range(len(labels)))
            errs = max(x[k] for k in x if k.startswith("rel_err_kernel"))
            print(f"{case:18s} {g} rows/e {x['rows_per_expert']:5d} gm {x['grouped_mm']['ms']:.3f} "
                  f"pe3 {x['per_expert_3streams']['ms']:.3f} | {ks}  max err {errs:.1e}")
PY
