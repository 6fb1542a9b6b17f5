# Session 5, call 5 (nvidia-h200-x2, carry .whl): the final code. GPU tests; the committed 100-step Mixtral training
# pair (no timing hooks); the Mixtral and Phi rows of the table at 8192 tokens with the fc2 input now stored by the
# activation-backward pass.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 110 python -m pytest -q -x tests/test_fused_gpu.py > $OUT/fused_gpu_tests.log 2>&1
echo "fused gpu tests exit $? ($((SECONDS-T0)) s)"; tail -1 $OUT/fused_gpu_tests.log
OUTDIR=$OUT ITERS=100 TIMEOUT=150 bash examples/compare_2gpu.sh mixtral_8x7b_2gpu.sh | tail -3
echo "training done ($((SECONDS-T0)) s)"
timeout 120 python -m torch.distributed.run --standalone --nproc-per-node=2 benchmarks/bench_layer.py \
  --cases mixtral-8x7b,phi3.5-moe --variants megatron,nccl_grouped_mm,comet --out $OUT > $OUT/bench_mixtral_phi.log 2>&1
echo "bench exit $? ($((SECONDS-T0)) s)"; grep -v -i warn $OUT/bench_mixtral_phi.log | tail -11
