export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi -L
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 200 python -m pytest -x -q -rs tests/test_fused_gpu.py > $OUT/fused_gpu_tests.log 2>&1
tail -25 $OUT/fused_gpu_tests.log
OUTDIR=$OUT ITERS=100 TIMEOUT=170 bash examples/compare_2gpu.sh mixtral_8x7b_2gpu.sh
for f in $OUT/*_comet.log $OUT/*_megatron.log; do echo "== $f"; grep -E "Error|error:|Traceback|iteration +(1|2|50|100)/" $f | grep -v -i warn | tail -12; done
