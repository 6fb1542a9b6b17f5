# session 2, call 3: init parity on the GPU, then the 100-step comparisons (Megatron alltoall vs --moe-comet,
# fused backward now the default) for the Mixtral-shaped and the Qwen3-30B-A3B-shaped 2-GPU examples.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD
COMET_TEST_DEVICE=cuda timeout 100 python -m pytest -q tests/test_init_parity.py > $OUT/init_parity_gpu.log 2>&1; tail -2 $OUT/init_parity_gpu.log
OUTDIR=$OUT ITERS=100 TIMEOUT=170 bash examples/compare_2gpu.sh mixtral_8x7b_2gpu.sh
OUTDIR=$OUT ITERS=100 TIMEOUT=170 bash examples/compare_2gpu.sh qwen3_30b_a3b_2gpu.sh
for f in $OUT/*_comet.log $OUT/*_megatron.log; do echo "== $f"; grep -E "Error|error:|Traceback|iteration +(1|100)/" $f | grep -v -i warn | tail -4 | cut -c1-330; done
