# Session 6, calls 1 and 2 (nvidia-h200, one GPU: the 2-GPU machine was not lent; carry .whl). EP=1 stand-ins for what the
# 2-GPU call (s6_call1_backward_order.sh, not run) was to measure:
# - peak memory and fwd+bwd time of one layer with the reordered fused backward that frees the saved fc1 output and
#   dispatched rows as soon as read: Mixtral at 4096 tokens (R = 8192 rows, as one rank of EP=2 at 4096) and Phi at
#   8192 tokens. Predicted: Comet's peak drops by [R, 2F] bf16 (0.44 GiB Mixtral, 0.39 GiB Phi at R=16384) below
#   Megatron's.
# - in training (2 Mixtral layers, EP=1, 30 iterations, both implementations): each timed section's thread CPU time
#   next to its host time (is the host slow because the thread is not scheduled, or because the code runs slowly?),
#   plus `top -H` snapshots.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
# call 1 found the fused backend failing at EP=1 (symmetric-memory rendezvous needs 2 ranks); call 2 runs it with the
# one-rank buffer in plain device memory, and the GPU tests at EP=1 first
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 100 python -m pytest -q -x tests/test_fused_gpu.py > $OUT/fused_gpu_tests.log 2>&1
echo "fused gpu tests exit $? ($((SECONDS-T0)) s)"; tail -1 $OUT/fused_gpu_tests.log
nproc; lscpu | grep -E "^(Model name|Socket|Core|Thread|NUMA node)"; cat /proc/loadavg
for spec in "mixtral-8x7b 4096" "phi3.5-moe 8192"; do set -- $spec
  timeout 120 python -m torch.distributed.run --standalone --nproc-per-node=1 benchmarks/bench_layer.py \
    --cases $1 --tokens $2 --variants megatron,comet --out $OUT/bench_$1 > $OUT/bench_$1.log 2>&1
  echo "bench $1 exit $? ($((SECONDS-T0)) s)"; grep -v -i warn $OUT/bench_$1.log | tail -4
done
( sleep 120; for i in 1 2; do echo "== snapshot $i"; top -b -n1 -H -w 160 | head -25; sleep 15; done \
  > $OUT/top_during_training.txt 2>&1 ) &
EP=1 NPROC=1 LAYERS=2 COMET_LAYER_TIMING=32 OUTDIR=$OUT ITERS=30 TIMEOUT=150 \
  bash examples/compare_2gpu.sh mixtral_8x7b_2gpu.sh | tail -4
echo "training done ($((SECONDS-T0)) s)"
rm -f $OUT/*.png; tar czf $OUT/bench.tgz -C $OUT bench_mixtral-8x7b bench_phi3.5-moe && rm -rf $OUT/bench_mixtral-8x7b $OUT/bench_phi3.5-moe
python -m comet_megatron.megatron.layer_timing $OUT/mixtral_8x7b_2gpu_*.log --json $OUT/layer_timing.json 2>/dev/null \
  | grep -v router | grep -v "gc.gen"
ls $OUT
