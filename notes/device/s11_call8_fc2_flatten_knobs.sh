# Session 11, call 8 (nvidia-h200, or H100 if none starts). With fc2 ⊕ combine flattened on the 128-wide shapes, do its
# other knobs still hold? epilogue_split 2 was chosen against register spills of 256-wide tiles (session 4), and the
# flattened loop uses more shared memory per stage set (147 vs 131 KB at 4 stages). Configs, twice in one run:
# default / epilogue_split 1 / num_stages 3. Prediction: within +-3% of the default on fc2 (split 1 frees no time on a
# 128-wide tile whose epilogue already overlaps the next loads); num_stages 3 a few % slower on fc1 (session 4: 4 > 3).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
C='[{}, {"epilogue_split": 1}, {"num_stages": 3}, {}, {"epilogue_split": 1}, {"num_stages": 3}]'
mkdir -p $OUT/g
for name in qwen1.5-moe-a2.7b dsv3-like qwen2-57b-a14b phi3.5-moe; do
  timeout 120 python benchmarks/bench_gemm_core.py --case $name --iters 30 --out $OUT/g --configs "$C" > $OUT/g/$name.log 2>&1
  echo "bench_gemm_core $name exit $? ($((SECONDS-T0)) s)"
done
for f in $OUT/g/*.log; do grep -A7 "tokens/rank" $f | head -8; done
tar czf $OUT/results.tgz -C $OUT g && rm -rf $OUT/g
ls $OUT
