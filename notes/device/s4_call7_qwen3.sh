# Session 4, call 7 (nvidia-h200-x2, carry .whl): the fine-grained training example with the current code (40 its).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUTDIR=$OUT ITERS=40 TIMEOUT=140 bash examples/compare_2gpu.sh qwen3_30b_a3b_2gpu.sh
