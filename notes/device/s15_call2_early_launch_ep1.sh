# Session 15, call 2 (one GPU). layer0 queued before the counts read (the early launch, guarded by the device plan's
# verdict) and the probability-gradient push, Triton 3.6 fix: GPU tests at EP=1 (the fused cases' second call runs
# the early path); the layer A/B comet vs comet_late_launch (COMET_EARLY_LAUNCH=0) at EP=1 on Mixtral at the
# training shape (4096 tokens), Qwen1.5 and DSv3; the 2-layer Mixtral training pair at EP=1 as in call 1.
# Prediction: tests pass; forward -0.3 to -0.6 ms at Mixtral 4096 (the post-read host window: fwd.plan 0.15 +
# dispatch_fc1 launch 0.29 ms in call 1), more on the host-paced fine-grained cases; training step -5 to -10 ms
# (16 forward calls per step) against call 1's 672.5 ms (Megatron 757.0 in the same run as control).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 300 python -m pytest -q -p no:cacheprovider tests/test_launcher.py \
  tests/test_routing_kernel.py tests/test_wgrad_kernel.py tests/test_grouped_linear.py tests/test_fused_gpu.py \
  -m gpu -k 'not ep2' > $OUT/gpu_tests.log 2>&1
echo "tests exit $? ($((SECONDS-T0)) s)"; tail -3 $OUT/gpu_tests.log
for T in 4096 8192; do
  C=$([ $T = 4096 ] && echo mixtral-8x7b || echo qwen1.5-moe-a2.7b,dsv3-like)
  timeout 150 python -m torch.distributed.run --standalone --nproc-per-node=1 benchmarks/bench_layer.py \
    --cases $C --tokens $T --variants comet,comet_late_launch,comet,comet_late_launch --out $OUT/layer$T \
    > $OUT/layer$T.log 2>&1
  echo "layer $T exit $? ($((SECONDS-T0)) s)"
  grep -v -i warn $OUT/layer$T.log | grep -A8 "^case " | head -10
done
mkdir -p /tmp/train
COMET_LAYER_TIMING=64 OUTDIR=/tmp/train ITERS=30 TIMEOUT=150 EP=1 NPROC=1 LAYERS=2 \
  bash examples/compare_2gpu.sh mixtral_8x7b_2gpu.sh > $OUT/train_compare.log 2>&1
echo "train exit $? ($((SECONDS-T0)) s)"; tail -4 $OUT/train_compare.log
python -m comet_megatron.megatron.layer_timing /tmp/train/mixtral_8x7b_2gpu_megatron.log \
  /tmp/train/mixtral_8x7b_2gpu_comet.log > $OUT/layer_timing.txt 2>&1
grep -E " moe | fused " $OUT/layer_timing.txt | grep -v Warn

tar czf $OUT/train_logs.tgz -C /tmp/train --exclude='*.png' . 2>/dev/null
rm -f $OUT/layer*/*.png; ls $OUT
