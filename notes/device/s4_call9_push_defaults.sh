# Session 4, call 9 (nvidia-h200, one GPU): the new push defaults (16 rows x 1024 columns per step) against the old
# (4 x 512), every case; bench_gemm_core now also checks that the pushed rows and probabilities are exact.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD
C='[{}, {"comm_rows": 4, "comm_block_h": 512}]'
for c in qwen1.5-moe-a2.7b dsv3-like qwen2-57b-a14b phi3.5-moe; do
  timeout 80 python benchmarks/bench_gemm_core.py --case $c --iters 20 --out $OUT --configs "$C" > $OUT/$c.log 2>&1
  echo "$c exit $?"
done
for f in $OUT/*.log; do grep -v -i warn $f | grep -E "tokens/rank|^fc1|^cfg"; done
rm -f $OUT/*.log
