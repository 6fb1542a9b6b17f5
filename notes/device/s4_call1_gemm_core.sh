# Session 4, call 1 (nvidia-h200, one GPU): the fused kernels' GEMM cores without communication (bench_gemm_core.py,
# two simulated ranks on one device) next to torch._grouped_mm, Mixtral at the training's 4096 tokens/rank and
# Qwen1.5-MoE at 8192; tile/epilogue variants.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD
nvidia-smi -L
timeout 330 python benchmarks/bench_gemm_core.py --case mixtral-8x7b --tokens 4096 --out $OUT --configs \
  '[{}, {"epilogue_split": 2}, {"dgrad_block_n": 256, "fc2_block_n": 256, "epilogue_split": 2}, {"num_stages": 3}, {"num_warps": 4}]' \
  > $OUT/mixtral.log 2>&1; echo "mixtral exit $?"
timeout 150 python benchmarks/bench_gemm_core.py --case qwen1.5-moe-a2.7b --out $OUT --configs \
  '[{}, {"epilogue_split": 2}, {"block_m": 64}]' > $OUT/qwen.log 2>&1; echo "qwen exit $?"
grep -v -i warn $OUT/mixtral.log | tail -14
grep -v -i warn $OUT/qwen.log | tail -12
