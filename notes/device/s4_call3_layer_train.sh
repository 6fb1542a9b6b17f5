# Session 4, call 3 (nvidia-h200-x2, carry .whl): after the GEMM-core changes (separate activation backward, split
# epilogues, 256-wide data-gradient / Mixtral fc2 tiles): GPU correctness, the Mixtral layer at the training's 4096
# tokens with a kernel profile, and 100 training iterations of the Mixtral example against Megatron.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 110 python -m pytest -q -x tests/test_fused_gpu.py > $OUT/fused_gpu_tests.log 2>&1
echo "fused gpu tests exit $?"; tail -2 $OUT/fused_gpu_tests.log
timeout 120 python -m torch.distributed.run --standalone --nproc-per-node=2 benchmarks/bench_layer.py \
  --cases mixtral-8x7b --tokens 4096 --variants megatron,comet --profile-kernels 3 --out $OUT \
  > $OUT/bench_4096.log 2>&1
echo "bench exit $?"
rm -f $OUT/bench_layer_ep2.png
grep -v -i warn $OUT/bench_4096.log | grep -A7 "kernels, ms per"
OUTDIR=$OUT ITERS=100 TIMEOUT=170 bash examples/compare_2gpu.sh mixtral_8x7b_2gpu.sh
grep -v -i warn $OUT/bench_4096.log | tail -7
ls $OUT
