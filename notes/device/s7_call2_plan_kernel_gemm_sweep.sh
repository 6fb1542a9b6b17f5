# Session 7, call 2 (nvidia-h200, one GPU). The plan kernel now takes EP / experts / tile height at run time:
# - compiled plan kernel == build_plan on 120 random counts matrices (EP 1-8 simulated), capacity overflow rebuilt;
#   then the EP=1 fused tests again (they use the device plan). Predicted: all pass, the plan test in < 60 s.
# - fc1 GEMM-core knobs not yet swept (Mixtral 4096 tokens, 2 ranks simulated): group_m 4 / 16, block_k 128 with
#   2 stages. Predicted: within ±3% of the default (fc1 3.26 ms vs cuBLAS 2.87 in session 4).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
COMET_TEST_DEVICE=cuda timeout 120 python -m pytest -q -x tests/test_fused_gpu.py -k device_plan --durations=3 \
  > $OUT/plan_kernel_gpu_test.log 2>&1
echo "plan kernel test exit $? ($((SECONDS-T0)) s)"; tail -4 $OUT/plan_kernel_gpu_test.log
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 200 python -m pytest -q -x tests/test_fused_gpu.py -k "ep1" \
  > $OUT/fused_gpu_tests_ep1.log 2>&1
echo "fused gpu tests (EP=1) exit $? ($((SECONDS-T0)) s)"; tail -1 $OUT/fused_gpu_tests_ep1.log
timeout 200 python benchmarks/bench_gemm_core.py --case mixtral-8x7b --tokens 4096 --iters 20 --out $OUT --configs \
  '[{}, {"group_m": 4}, {"group_m": 16}, {"block_k": 128, "num_stages": 2}]' > $OUT/gemm_core_mixtral.log 2>&1
echo "gemm core sweep exit $? ($((SECONDS-T0)) s)"; grep -v -i warn $OUT/gemm_core_mixtral.log | tail -22
rm -f $OUT/*.png
ls $OUT
