# Session 14, call 3 (one GPU). The launcher's final key (specialized ints inline too) and the shared GEMM tile-side
# check (tuning.is_gemm_tile_side, used by the weight-gradient kernel's config): the GPU tests once more; host cost per
# step alternating fast / Triton launches on Qwen1.5 and DSv3 (the routing kernels' int arguments now keyed inline);
# the five issue cases at EP=1, Megatron / Comet / Comet with Triton's launch path, one run (a third A/B sample and
# the EP=1 table with the current code; last full table: s11 call 5).
# Prediction: tests all pass; routing kernels' host µs below Triton's path now (~10-20 us over 2 launches); layer
# A/B within noise again; Comet fastest on every case, x-floor close to s11's (Mixtral 1.46/1.35, Qwen1.5 3.59/2.63).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 300 python -m pytest -q -p no:cacheprovider tests/test_launcher.py \
  tests/test_routing_kernel.py tests/test_wgrad_kernel.py tests/test_grouped_linear.py tests/test_fused_gpu.py \
  -m gpu -k 'not ep2' > $OUT/gpu_tests.log 2>&1
echo "tests exit $? ($((SECONDS-T0)) s)"; tail -3 $OUT/gpu_tests.log
for c in qwen1.5-moe-a2.7b dsv3-like; do
  timeout 60 python benchmarks/bench_host_path.py --case $c --launch both --iters 150 --out $OUT > $OUT/host_$c.log 2>&1
  echo "host $c exit $? ($((SECONDS-T0)) s)"
  grep -v -i warn $OUT/host_$c.log | grep -E 'routing kernel|device_plan|launcher|forward total|comet launch|^step'
done
timeout 200 python -m torch.distributed.run --standalone --nproc-per-node=1 benchmarks/bench_layer.py \
  --cases mixtral-8x7b,qwen1.5-moe-a2.7b,qwen2-57b-a14b,phi3.5-moe,dsv3-like \
  --variants megatron,comet,comet_triton_launch --out $OUT > $OUT/layer.log 2>&1
echo "layer exit $? ($((SECONDS-T0)) s)"
grep -v -i warn $OUT/layer.log | grep -A22 "^case " | head -24
rm -f $OUT/*.png; ls $OUT
