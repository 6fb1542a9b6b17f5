# Session 24, call 6 (one GPU). The weight-gradient defaults re-measured as the GEMM tiles were (calls 1-5: stale tile
# defaults): bench_wgrad at the issue shapes, EP=2 (one rank's share) and EP=1, random routing, per-expert cuBLAS
# on 3 streams vs the accumulating kernel with its default tile and four others; auto's per-expert threshold
# (PER_EXPERT_MIN_FLOPS 32e9 per expert GEMM) checked against which wins.
# Prediction: per_expert wins on Mixtral / Phi / Qwen2-57B (auto's choice), the kernel on DSv3 / Qwen3 (auto's), tile
# variants within 5% of the default.
source notes/device/common.sh
nvidia-smi --query-gpu=name --format=csv,noheader
K='[{"num_stages": 4}, {"BN": 256, "num_warps": 8}, {"GROUP_M": 4}, {"BK": 32, "num_stages": 5}]'
for ep in 2 1; do
  timeout 200 python benchmarks/bench_wgrad.py --cases mixtral-8x7b,phi3.5-moe,qwen2-57b-a14b,qwen1.5-moe-a2.7b,dsv3-like,qwen3-30b-a3b \
    --ep $ep --routing random --per-expert-streams 3 --kernel-configs "$K" --iters 10 --out /tmp/wg_$ep > $OUT/wgrad_ep$ep.log 2>&1
  echo "wgrad ep$ep exit $? ($((SECONDS-T0)) s)"
  cp /tmp/wg_$ep/bench_wgrad.json $OUT/bench_wgrad_ep$ep.json
done
for ep in 2 1; do echo "== EP=$ep"; grep -v -i warn $OUT/wgrad_ep$ep.log | grep -v "^wrote" | cut -c1-120 | tail -60; done
