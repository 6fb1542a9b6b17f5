# Session 9, call 5 (nvidia-h200, the last ~4 min of device time). After the review: the method choice per mode fixed,
# main_grad.add_ without an fp32 copy, a GPU case whose main_grad offsets pass 2^31 elements (80 x 4096 x 7168 fp32).
# Expected: all pass (the kernel computes every offset in int64).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
COMET_TEST_DEVICE=cuda timeout 90 python -m pytest -q tests/test_wgrad_kernel.py tests/test_grouped_linear.py \
  -k "compiled or gpu" > $OUT/gpu_tests_wgrad.log 2>&1
echo "wgrad GPU tests exit $? ($((SECONDS-T0)) s)"; grep -E "passed|failed|FAIL|Error" $OUT/gpu_tests_wgrad.log | tail -6
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 90 python -m pytest -q tests/test_fused_gpu.py -k "ep1 and main_grad" \
  > $OUT/gpu_tests_fused_main_grad.log 2>&1
echo "fused main_grad GPU tests exit $? ($((SECONDS-T0)) s)"; grep -E "passed|failed|FAIL|Error" $OUT/gpu_tests_fused_main_grad.log | tail -6
