# Session 6, call 1 (nvidia-h200-x2, carry .whl). The fused backward now runs fc2 wgrad -> fc1 dgrad+combine push ->
# fc1 wgrad -> top-k reduce (the less busy rank computes its fc1 weight gradient while the busier one pushes) and
# frees the saved fc1 output / dispatched rows as soon as read. Predicted: peak memory of Mixtral 4096 and Phi 8192
# below Megatron's (-[R, 2F] bf16); in training bwd.reduce 2.2 -> < 1 ms per call. Also: each timed section's
# thread CPU time (is the host slow in training because the thread is not scheduled, or because the code runs slowly?)
# and `top -H` snapshots during the Comet run.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
nproc; lscpu | grep -E "^(Model name|Socket|Core|Thread|NUMA node)" ; cat /proc/loadavg
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 110 python -m pytest -q -x tests/test_fused_gpu.py > $OUT/fused_gpu_tests.log 2>&1
echo "fused gpu tests exit $? ($((SECONDS-T0)) s)"; tail -1 $OUT/fused_gpu_tests.log
for spec in "mixtral-8x7b 4096" "phi3.5-moe 8192"; do set -- $spec
  timeout 100 python -m torch.distributed.run --standalone --nproc-per-node=2 benchmarks/bench_layer.py \
    --cases $1 --tokens $2 --variants megatron,comet --out $OUT/bench_$1 > $OUT/bench_$1.log 2>&1
  echo "bench $1 exit $? ($((SECONDS-T0)) s)"; grep -v -i warn $OUT/bench_$1.log | tail -4
done
( sleep 150; for i in 1 2; do echo "== snapshot $i"; top -b -n1 -H -w 160 | head -30; sleep 20; done \
  > $OUT/top_during_training.txt 2>&1 ) &  # the Comet run is in its steady state then (Megatron's takes ~100 s)
T0=$SECONDS
COMET_LAYER_TIMING=64 OUTDIR=$OUT ITERS=40 TIMEOUT=130 bash examples/compare_2gpu.sh mixtral_8x7b_2gpu.sh | tail -4
echo "training done ($((SECONDS-T0)) s)"
rm -f $OUT/*.png; tar czf $OUT/bench.tgz -C $OUT bench_mixtral-8x7b bench_phi3.5-moe && rm -rf $OUT/bench_mixtral-8x7b $OUT/bench_phi3.5-moe
python -m comet_megatron.megatron.layer_timing $OUT/mixtral_8x7b_2gpu_*.log --json $OUT/layer_timing.json 2>/dev/null \
  | grep -v attention | grep -v router | grep -v "gc.gen"
ls $OUT
