# Session 5, call 2 (nvidia-h200-x2, carry .whl). Call 1 found the Mixtral training gap inside the MoE layer in situ
# (CUDA events, no syncs): per call fwd 7.78 vs 7.67 ms, bwd 15.17 vs 14.18 (Comet vs Megatron), 16 calls per step
# = the 17 ms/step gap; clocks and power equal. This call: the fused layer's phases in situ and in the benchmark
# (COMET_LAYER_TIMING also times fused phases), with the fc2 input now stored by the activation-backward pass
# (was recomputed by PyTorch elementwise ops in the backward). GPU tests first (the new kernel path).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 110 python -m pytest -q -x tests/test_fused_gpu.py > $OUT/fused_gpu_tests.log 2>&1
echo "fused gpu tests exit $? ($((SECONDS-T0)) s)"; tail -2 $OUT/fused_gpu_tests.log
COMET_LAYER_TIMING=40 timeout 120 python -m torch.distributed.run --standalone --nproc-per-node=2 benchmarks/bench_layer.py \
  --cases mixtral-8x7b --tokens 4096 --variants megatron,comet --out $OUT > $OUT/bench_4096.log 2>&1
echo "bench exit $? ($((SECONDS-T0)) s)"; rm -f $OUT/bench_layer_ep2.png; grep -v -i warn $OUT/bench_4096.log | grep -v comet-layer-timing | tail -6
COMET_LAYER_TIMING=64 OUTDIR=$OUT ITERS=40 TIMEOUT=140 bash examples/compare_2gpu.sh mixtral_8x7b_2gpu.sh | tail -4
echo "training done ($((SECONDS-T0)) s)"
rm -f $OUT/*.png
python -m comet_megatron.megatron.layer_timing $OUT/bench_4096.log --skip-reports 1 2>/dev/null
python -m comet_megatron.megatron.layer_timing $OUT/mixtral_8x7b_2gpu_megatron.log $OUT/mixtral_8x7b_2gpu_comet.log 2>/dev/null
