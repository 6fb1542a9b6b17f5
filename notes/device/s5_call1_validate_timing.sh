# Session 5, call 1 (nvidia-h200-x2, carry .whl): (1) GPU tests with the 16 x 1024 push default (never run on 2 GPUs);
# (2) the fine-grained table rows with it; (3) the Mixtral training pair with in-situ layer timing
# (COMET_LAYER_TIMING: CUDA events around every MoE layer and attention call, no syncs) and nvidia-smi dmon beside it.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 110 python -m pytest -q -x tests/test_fused_gpu.py > $OUT/fused_gpu_tests.log 2>&1
echo "fused gpu tests exit $? ($((SECONDS-T0)) s)"; tail -2 $OUT/fused_gpu_tests.log
timeout 140 python -m torch.distributed.run --standalone --nproc-per-node=2 benchmarks/bench_layer.py \
  --cases qwen1.5-moe-a2.7b,qwen2-57b-a14b,dsv3-like --variants megatron,nccl_grouped_mm,comet --out $OUT \
  > $OUT/bench_fine.log 2>&1
echo "bench exit $? ($((SECONDS-T0)) s)"; rm -f $OUT/bench_layer_ep2.png; grep -v -i warn $OUT/bench_fine.log | tail -8
nvidia-smi dmon -s pucv -d 1 -o T > $OUT/dmon.log 2>&1 &
DMON=$!
COMET_LAYER_TIMING=64 OUTDIR=$OUT ITERS=40 TIMEOUT=140 bash examples/compare_2gpu.sh mixtral_8x7b_2gpu.sh | tail -12
kill $DMON
echo "training done ($((SECONDS-T0)) s)"
rm -f $OUT/*.png
python -m comet_megatron.megatron.layer_timing $OUT/mixtral_8x7b_2gpu_megatron.log $OUT/mixtral_8x7b_2gpu_comet.log
