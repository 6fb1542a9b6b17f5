# Session 11, call 3 (nvidia-h200). Call 2: fc2_flatten made fc2 5-12% faster on the 128-wide shapes (Qwen1.5 0.531 ->
# 0.468 ms, DSv3 3.02 -> 2.80, Qwen2-57B 2.53 -> 2.39, Phi 1.56 -> 1.48), Mixtral even, but the kernels it does not
# touch moved up to 11% between that run's configs (Phi fc1 2.61 vs 2.91): too noisy to pick a default. Now A/B/A/B
# in one run with 40 iterations, and in the EP=1 layer the profiler's fc2_combine_kernel time (fc2 forward + fc1
# data-gradient) default vs flattened. Prediction: fc2 5-12% faster on the four 128-wide shapes in both A/B pairs;
# fc1 data-gradient within +-3%; in the layer, fc2_combine_kernel per fwd+bwd call 3-8% lower.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
F='{"fc2_flatten": true}'
mkdir -p $OUT/g
for name in qwen1.5-moe-a2.7b dsv3-like qwen2-57b-a14b phi3.5-moe; do
  timeout 100 python benchmarks/bench_gemm_core.py --case $name --iters 40 --out $OUT/g --configs "[{}, $F, {}, $F]" \
    > $OUT/g/$name.log 2>&1
  echo "bench_gemm_core $name exit $? ($((SECONDS-T0)) s)"
done
for f in $OUT/g/*.log; do grep -A8 "tokens/rank" $f | head -7; done
for flat in 0 1; do
  cfg=$([ $flat = 1 ] && echo "$F" || echo '{}')
  COMET_KERNEL_CONFIG="$cfg" timeout 200 python -m torch.distributed.run --standalone --nproc-per-node=1 \
    benchmarks/bench_layer.py --cases qwen1.5-moe-a2.7b,qwen2-57b-a14b,phi3.5-moe,dsv3-like \
    --variants comet --profile-kernels 3 --out $OUT/layer_flat$flat > $OUT/g/bench_layer_flat$flat.log 2>&1
  echo "layer fc2_flatten=$flat exit $? ($((SECONDS-T0)) s)"
  grep -v -i warn $OUT/g/bench_layer_flat$flat.log | grep -E "kernels, ms per|fc2_combine_kernel|dispatch_fc1_kernel"
  grep -v -i warn $OUT/g/bench_layer_flat$flat.log | grep -A9 "^case " | grep -v floor
done
mv $OUT/layer_flat0/*.json $OUT/g/bench_layer_ep1_default.json; mv $OUT/layer_flat1/*.json $OUT/g/bench_layer_ep1_fc2_flatten.json
rm -rf $OUT/layer_flat0 $OUT/layer_flat1
tar czf $OUT/results.tgz -C $OUT g && rm -rf $OUT/g
ls $OUT
