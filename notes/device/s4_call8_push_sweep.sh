# Session 4, call 8 (nvidia-h200, one GPU): the push programs' granularity. On one GPU fc1 with its push programs
# running took 1.85 ms vs 0.76 without them (Qwen1.5-MoE): with 4 rows x 512 columns per step each program keeps
# only 4 KB in flight. Sweep rows/columns per step on the push-heavy cases.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD
C='[{}, {"comm_rows": 8}, {"comm_rows": 16}, {"comm_rows": 16, "comm_block_h": 1024}, {"comm_rows": 32, "comm_block_h": 256}]'
for c in qwen1.5-moe-a2.7b dsv3-like qwen2-57b-a14b; do
  timeout 100 python benchmarks/bench_gemm_core.py --case $c --iters 20 --out $OUT --configs "$C" > $OUT/$c.log 2>&1
  echo "$c exit $?"
done
timeout 80 python benchmarks/bench_gemm_core.py --case mixtral-8x7b --tokens 4096 --iters 20 --out $OUT --configs "$C" \
  > $OUT/mixtral.log 2>&1; echo "mixtral exit $?"
rm -f $OUT/*.log.tmp
for f in $OUT/*.log; do grep -v -i warn $f | grep -B1 -A3 "^fc1 "; done
