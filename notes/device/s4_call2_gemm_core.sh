# Session 4, call 2 (nvidia-h200, one GPU): bench_gemm_core.py with the separate activation backward
# (dgrad_fused_activation=false) and split epilogues, every benchmark case.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD
S='"dgrad_fused_activation": false, "epilogue_split": 2'
W='"dgrad_block_n": 256, "fc2_block_n": 256'
timeout 150 python benchmarks/bench_gemm_core.py --case mixtral-8x7b --tokens 4096 --iters 30 --out $OUT --configs \
  "[{}, {\"dgrad_fused_activation\": false}, {$S}, {$S, $W}, {$S, $W, \"num_stages\": 3}]" > $OUT/mixtral.log 2>&1
echo "mixtral exit $?"
for c in qwen1.5-moe-a2.7b phi3.5-moe qwen2-57b-a14b dsv3-like; do
  timeout 100 python benchmarks/bench_gemm_core.py --case $c --iters 30 --out $OUT --configs \
    "[{}, {$S}, {$S, $W}]" > $OUT/$c.log 2>&1; echo "$c exit $?"
done
for f in $OUT/*.log; do grep -v -i warn $f | grep -A12 "tokens/rank"; done
