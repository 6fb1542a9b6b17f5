# Prepared at the end of session 4, NOT YET RUN (nvidia-h200-x2, carry .whl): (1) GPU tests with the push default
# that changed after session 4's device time was spent (16 x 1024 per push step); (2) the fine-grained table rows with
# it; (3) the Mixtral training pair with SM clocks / power / utilisation sampled every second beside each run
# (the first check of notes/next-steps.md section 1).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 110 python -m pytest -q -x tests/test_fused_gpu.py > $OUT/fused_gpu_tests.log 2>&1
echo "fused gpu tests exit $?"; tail -2 $OUT/fused_gpu_tests.log
timeout 150 python -m torch.distributed.run --standalone --nproc-per-node=2 benchmarks/bench_layer.py \
  --cases qwen1.5-moe-a2.7b,qwen2-57b-a14b,dsv3-like --variants megatron,nccl_grouped_mm,comet --out $OUT \
  > $OUT/bench_fine.log 2>&1
echo "bench exit $?"; rm -f $OUT/bench_layer_ep2.png; grep -v -i warn $OUT/bench_fine.log | tail -14
# one dmon log for the pair: the runs are sequential (Megatron, then Comet); the log's timestamps split them
nvidia-smi dmon -s pucv -d 1 -o T > $OUT/dmon.log 2>&1 &
DMON=$!
OUTDIR=$OUT ITERS=60 TIMEOUT=150 bash examples/compare_2gpu.sh mixtral_8x7b_2gpu.sh
kill $DMON
rm -f $OUT/*.png
