# Session 4, call 5 (nvidia-h200-x2, carry .whl): the 100-iteration Mixtral comparison again with the order reversed
# (Comet first, then Megatron): the profiled window had Comet ahead (1458 vs 1503 ms per 2 steps) while the medians of
# call 3 had it behind (718.6 vs 677.2) - is the second run of a pair slower?
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=index,temperature.gpu,clocks.sm,power.draw --format=csv
ORDER="1 0" OUTDIR=$OUT ITERS=100 TIMEOUT=200 bash examples/compare_2gpu.sh mixtral_8x7b_2gpu.sh
nvidia-smi --query-gpu=index,temperature.gpu,clocks.sm,power.draw --format=csv
