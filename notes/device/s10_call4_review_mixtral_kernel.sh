# Session 10, call 4 (nvidia-h200). (1) After the review: the compiled kernel's tests over all four path combinations
# (pointer / TMA loads x in-program / bulk reduce-add) and the check that the default takes both TMA paths; grouped_linear
# GPU tests. (2) Mixtral training at EP=1 (2 layers, 8 local experts of 481 GFLOP per weight-gradient GEMM): `auto`
# (per-expert cuBLAS) against COMET_WGRAD_ACCUMULATION=kernel, kernel run in between. bench_wgrad (call 3, EP=1 4096
# tok): per-expert fc1 + fc2 4.60 + 2.25 ms vs kernel 4.74 + 2.73, so predicted auto ~0.6 ms per layer call faster in
# situ (~10 ms/step of ~680), i.e. the 32 GFLOP rule holds in training too.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 200 python -m pytest -q tests/test_wgrad_kernel.py tests/test_grouped_linear.py \
  -k "compiled or on_gpu" > $OUT/gpu_tests.log 2>&1
echo "GPU tests exit $? ($((SECONDS-T0)) s)"; grep -E "passed|failed|FAIL|Error" $OUT/gpu_tests.log | tail -8
mkdir -p $OUT/train
for run in auto:auto kernel:kernel autoB:auto; do
  name=${run%%:*}; mode=${run##*:}
  EP=1 NPROC=1 LAYERS=2 ITERS=25 COMET=1 COMET_LAYER_TIMING=32 COMET_WGRAD_ACCUMULATION=$mode \
    LOG=$OUT/train/mixtral_comet_$name.log timeout 120 bash examples/mixtral_8x7b_2gpu.sh > /dev/null 2>&1
  echo "mixtral training comet wgrad=$name exit $? ($((SECONDS-T0)) s)"
done
python examples/compare_runs.py $OUT/train/mixtral_comet_auto.log $OUT/train/mixtral_comet_kernel.log \
  $OUT/train/mixtral_comet_autoB.log --labels auto_per_expert kernel auto_per_expert_B --seq 4096 \
  --json $OUT/train_compare.json | tail -4
for n in auto kernel autoB; do echo "== $n"
  python -m comet_megatron.megatron.layer_timing $OUT/train/mixtral_comet_$n.log 2>/dev/null | grep -E " (moe|experts) | bwd\.fc[12]_wgrad" | cut -c36-; done
tar czf $OUT/runs.tgz -C $OUT train && rm -rf $OUT/train
ls $OUT
