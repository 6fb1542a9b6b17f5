# Session 4, call 4 (nvidia-h200-x2, carry .whl): the layer benchmark now has Comet ahead (18.89 vs 19.72 ms at 4096
# tokens) but training did not move (718.6 vs 677.2 ms/step): profile both ranks of both training runs (iterations
# 20-21), then the layer under uneven routing (--router-skew 3) with a kernel profile.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUTDIR=$OUT ITERS=23 TIMEOUT=150 PROFILE=1 PROFILE_RANKS="0 1" PROFILE_TOP=30 \
  bash examples/compare_2gpu.sh mixtral_8x7b_2gpu.sh > $OUT/compare_profile.log 2>&1
echo "compare exit $?"
rm -rf $OUT/mixtral_8x7b_2gpu_megatron $OUT/mixtral_8x7b_2gpu_comet $OUT/*.png $OUT/mixtral_8x7b_2gpu_compare.json
python - "$OUT/mixtral_8x7b_2gpu_traces.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for label, s in d.items():
    print(f"{label}: busy {s['busy_ms']:.0f} idle {s['idle_ms']:.0f} span {s['span_ms']:.0f} ms (2 steps)")
    for k in s["top_kernels"][:14]:
        print(f"   {k['total_ms']:8.1f} {k['calls']:5d}  {k['name'][:90]}")
PY
timeout 110 python -m torch.distributed.run --standalone --nproc-per-node=2 benchmarks/bench_layer.py \
  --cases mixtral-8x7b --tokens 4096 --variants megatron,comet --router-skew 3 --profile-kernels 3 --out $OUT \
  > $OUT/bench_skew3.log 2>&1
echo "bench exit $?"; rm -f $OUT/bench_layer_ep2.png
grep -v -i warn $OUT/bench_skew3.log | grep -A8 "kernels, ms per"
grep -v -i warn $OUT/bench_skew3.log | tail -5
