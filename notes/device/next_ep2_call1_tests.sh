# Prepared in sessions 9-11 for the first call on nvidia-h200-x2 (not run yet; carry .whl; rename to sN_call1_*.sh when
# it runs). Nothing since session 5 has run at EP=2: the reordered backward (s6), the plan built on the GPU (s7), the
# routing kernels and self-zeroing queues (s8), the experts' own accumulation into main_grad (s9), the weight-gradient
# kernel's TMA loads and bulk reduce-add (s10), fc2 ⊕ combine's flattened tile loop as the fine-grained default (s11).
# This call: every GPU test at EP=2 (20 fused cases x the two backward modes' worth of ranks, compiled plan / routing /
# wgrad kernels, grouped_linear). Session 11's EP=1 set of 27 took 207 s on one H200; EP=2 spawns two ranks per case,
# hence the long timeout (a second call runs the training: next_ep2_call2_training.sh). Predicted: all pass.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 540 python -m pytest -q --durations=5 tests/test_fused_gpu.py \
  tests/test_routing_kernel.py tests/test_wgrad_kernel.py tests/test_grouped_linear.py -k "ep2 or compiled or on_gpu" \
  > $OUT/gpu_tests_ep2.log 2>&1
echo "GPU tests exit $? ($((SECONDS-T0)) s)"; grep -E "passed|failed|FAIL|Error" $OUT/gpu_tests_ep2.log | tail -8
ls $OUT
