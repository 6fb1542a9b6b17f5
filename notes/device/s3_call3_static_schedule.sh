# Session 3, call 3 (nvidia-h200-x2, carry .whl): static tile schedule (flattened, cross-tile pipelined loops).
# 1. Mixtral layer, 4096 tokens/rank: Megatron, Comet (shared tile queue) and static-schedule variants, per-kernel
#    profile and rank 0's Chrome traces (host + GPU) for the gap analysis.
# 2. The faster Comet config of (1) (by fwd+bwd) trains 60 iterations against Megatron (same seed).
# Ran at commit 55264c7; the static_schedule option was removed afterwards (slower), so this needs that commit.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
CFGS='[{"static_schedule": true}, {"static_schedule": true, "num_stages": 3}]'
timeout 200 python -m torch.distributed.run --standalone --nproc-per-node=2 benchmarks/bench_layer.py \
  --cases mixtral-8x7b --tokens 4096 --variants megatron,comet --comet-configs "$CFGS" --profile-kernels 3 \
  --trace-dir $OUT --out $OUT > $OUT/bench_static.log 2>&1
echo "bench exit $?"
grep -v -i warn $OUT/bench_static.log | grep -A7 "kernels, ms per"
rm -f $OUT/bench_layer_ep2.png
BEST=$(python - "$CFGS" <<'PY'
import json, os, sys
v = json.load(open(os.path.join(os.environ["OUT"], "bench_layer_ep2.json")))["cases"]["mixtral-8x7b"]["variants"]
cands = [("comet", {})] + [(f"comet_cfg{i}", c) for i, c in enumerate(json.loads(sys.argv[1]))]
ok = [(v[n]["fwdbwd_ms"], c) for n, c in cands if isinstance(v.get(n), dict) and isinstance(v[n].get("fwdbwd_ms"), float)]
print(json.dumps(min(ok, key=lambda t: t[0])[1]) if ok else "{}")
PY
)
echo "training with COMET_KERNEL_CONFIG=$BEST"
COMET_KERNEL_CONFIG="$BEST" OUTDIR=$OUT ITERS=60 TIMEOUT=150 bash examples/compare_2gpu.sh mixtral_8x7b_2gpu.sh
grep -v -i warn $OUT/bench_static.log | tail -9
rm -f $OUT/trace_*_megatron.json.gz $OUT/mixtral_8x7b_2gpu_compare.png
