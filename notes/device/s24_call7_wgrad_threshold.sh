# Session 24, call 7 (one GPU). auto's per-expert threshold (PER_EXPERT_MIN_FLOPS) at the boundary: call 6 had
# per-expert cuBLAS on 3 streams 20% ahead of the accumulating kernel on Qwen2-57B's fc2 at 18.7 GFLOP per expert
# (EP=1, 8192 tokens: the rows per expert of EP=2 at 4096, the Qwen2-57B training example), the kernel 6% ahead on
# DSv3-like's fc1 at 16.0. Repeat both, three runs each, at the training shape (EP=2, 4096 tokens) and at 8192.
# Prediction: the same order in every run: per-expert wins from ~17 GFLOP per expert up.
source notes/device/common.sh
nvidia-smi --query-gpu=name --format=csv,noheader
for run in 1 2 3; do
  timeout 100 python benchmarks/bench_wgrad.py --cases qwen2-57b-a14b,dsv3-like,qwen1.5-moe-a2.7b --ep 2 --tokens 4096 \
    --routing random --per-expert-streams 3 --iters 10 --out /tmp/wt_$run > /tmp/wt_$run.log 2>&1
  echo "ep2 4096 run $run exit $? ($((SECONDS-T0)) s)"; cp /tmp/wt_$run/bench_wgrad.json $OUT/wgrad_ep2_4096_$run.json
  timeout 100 python benchmarks/bench_wgrad.py --cases qwen2-57b-a14b,dsv3-like --ep 2 \
    --routing random --per-expert-streams 3 --iters 10 --out /tmp/wf_$run > /tmp/wf_$run.log 2>&1
  echo "ep2 case tokens run $run exit $? ($((SECONDS-T0)) s)"; cp /tmp/wf_$run/bench_wgrad.json $OUT/wgrad_ep2_case_$run.json
done
python - <<'PY'
import glob, json, os
for f in sorted(glob.glob(os.environ["OUT"] + "/wgrad_*.json")):
    d = json.load(open(f))
    for case, c in d["cases"].items():
        for g, r in c.items():
            if not isinstance(r, dict):
                continue
            vs = r.get("variants", r)
            ms = {k: v["ms"] for k, v in vs.items() if isinstance(v, dict) and "ms" in v}
            if "kernel" in ms:
                print(f"{os.path.basename(f):24} {case:18} {g:4} per_expert_3streams {ms.get('per_expert_3streams', float('nan')):7.3f}"
                      f" kernel {ms['kernel']:7.3f} grouped+add {ms.get('grouped+add', float('nan')):7.3f}")
PY
