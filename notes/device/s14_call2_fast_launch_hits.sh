# Session 14, call 2 (one GPU). Call 1 found the fast path never taken: Triton 3.6 keeps its launch hooks as empty
# HookChain objects (never None), and launcher.py took any non-None hook as installed (its GPU test failed on exactly
# that: no cached binary). Fixed, and the key made cheaper (keyword items + types, one entry per positional argument,
# tensors inline; local CPU: 7.7-12 us vs Triton's binder + key 11.5-18 us for dispatch_fc1's 24 + 17 arguments).
# Now: the GPU tests again (this time the real kernels run from the cache after their first call), host cost per
# step alternating fast / Triton launches, and the EP=1 layer with both (fine-grained cases, two passes).
# Prediction: ~15 us less per launch (Triton's path 47.8 us for 44 arguments, the compiled launcher 16.4, our key
# ~10-15): forward host path without router ~60-90 us lower (6 launches); layer fwd on Qwen1.5 ~2-4% lower.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 300 python -m pytest -q -p no:cacheprovider tests/test_launcher.py \
  tests/test_routing_kernel.py tests/test_wgrad_kernel.py tests/test_grouped_linear.py tests/test_fused_gpu.py \
  -m gpu -k 'not ep2' > $OUT/gpu_tests.log 2>&1
echo "tests exit $? ($((SECONDS-T0)) s)"; tail -3 $OUT/gpu_tests.log
timeout 60 python benchmarks/bench_host_path.py --case qwen1.5-moe-a2.7b --launch both --iters 150 --out $OUT \
  > $OUT/host_qwen1.5.log 2>&1
echo "host exit $? ($((SECONDS-T0)) s)"; grep -v -i warn $OUT/host_qwen1.5.log | grep -v written
for pass in 1 2; do
  mkdir -p $OUT/p$pass
  timeout 150 python -m torch.distributed.run --standalone --nproc-per-node=1 benchmarks/bench_layer.py \
    --cases qwen1.5-moe-a2.7b,dsv3-like,qwen2-57b-a14b --variants comet,comet_triton_launch --out $OUT/p$pass \
    > $OUT/p$pass/layer.log 2>&1
  echo "layer pass $pass exit $? ($((SECONDS-T0)) s)"
  grep -v -i warn $OUT/p$pass/layer.log | grep -A12 "^case " | head -14
done
mv $OUT/p1/bench_layer_ep1.json $OUT/layer_ep1_pass1.json; mv $OUT/p2/bench_layer_ep1.json $OUT/layer_ep1_pass2.json
cat $OUT/p1/layer.log $OUT/p2/layer.log | grep -v -i warn > $OUT/layer.log; rm -rf $OUT/p1 $OUT/p2 $OUT/*.png
ls $OUT
