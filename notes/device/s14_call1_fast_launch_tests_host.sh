# Session 14, call 1 (one GPU). comet_megatron/launcher.py: every Triton launch of the package goes through the
# compiled kernel's own launcher when its key (at least as fine as Triton's specialization) has been seen. Validates
# it (GPU tests: the launcher's own — every cache hit is the binary Triton's path returns —, the compiled routing /
# plan / wgrad kernels and the fused layer at EP=1, all through the fast path now) and measures the host cost per
# step with iterations alternating the fast path and Triton's (bench_host_path --launch both).
# Prediction: launches ~20-25 us cheaper each (s12: 45.9 us through JITFunction.run vs 15.9 through the compiled
# launcher, plus ~8 us for our key): the forward host path without router (Qwen1.5, s12: 644 us) ~100-130 us lower.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 330 python -m pytest -q -p no:cacheprovider tests/test_launcher.py \
  tests/test_routing_kernel.py tests/test_wgrad_kernel.py tests/test_grouped_linear.py tests/test_fused_gpu.py \
  -m gpu -k 'not ep2' > $OUT/gpu_tests.log 2>&1
echo "tests exit $? ($((SECONDS-T0)) s)"; tail -3 $OUT/gpu_tests.log
for c in qwen1.5-moe-a2.7b dsv3-like; do
  timeout 90 python benchmarks/bench_host_path.py --case $c --launch both --iters 150 --out $OUT > $OUT/host_$c.log 2>&1
  echo "host $c exit $? ($((SECONDS-T0)) s)"; grep -v -i warn $OUT/host_$c.log | grep -v written
done
rm -f $OUT/*.png
ls $OUT
