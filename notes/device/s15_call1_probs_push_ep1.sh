# Session 15, call 1 (one GPU). The router-probability gradients now travel with the backward's fc1 data-gradient
# rows (fc2_combine PUSH_PROBS into the owners' combine_probs) instead of an NCCL all_to_all after the weight
# gradients: the GPU tests at EP=1 (fused layer vs reference incl. the router gradient, every kernel), then a
# 2-layer Mixtral training pair at EP=1 on this one GPU with in-situ layer timing (the forward's host window after
# the counts read, measured at the training shape: 4096 tokens, 8192 rows per layer call).
# Prediction: tests all pass; training loss equal at iteration 1 (<1e-5), Comet faster per step; fwd.plan host ~0.2 ms.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 300 python -m pytest -q -p no:cacheprovider tests/test_launcher.py \
  tests/test_routing_kernel.py tests/test_wgrad_kernel.py tests/test_grouped_linear.py tests/test_fused_gpu.py \
  -m gpu -k 'not ep2' > $OUT/gpu_tests.log 2>&1
echo "tests exit $? ($((SECONDS-T0)) s)"; tail -3 $OUT/gpu_tests.log
mkdir -p /tmp/train
COMET_LAYER_TIMING=64 OUTDIR=/tmp/train ITERS=30 TIMEOUT=150 EP=1 NPROC=1 LAYERS=2 \
  bash examples/compare_2gpu.sh mixtral_8x7b_2gpu.sh > $OUT/train_compare.log 2>&1
echo "train exit $? ($((SECONDS-T0)) s)"; tail -12 $OUT/train_compare.log
python -m comet_megatron.megatron.layer_timing /tmp/train/mixtral_8x7b_2gpu_megatron.log \
  /tmp/train/mixtral_8x7b_2gpu_comet.log --json $OUT/layer_timing.json > $OUT/layer_timing.txt 2>&1
grep -E "moe|experts|fused|router|dispatch" $OUT/layer_timing.txt | grep -v Warn
cp /tmp/train/*compare.json $OUT/ 2>/dev/null
tar czf $OUT/train_logs.tgz -C /tmp/train --exclude='*.png' . 2>/dev/null
ls $OUT
