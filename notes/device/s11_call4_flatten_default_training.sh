# Session 11, call 4 (nvidia-h200). fc2_flatten is now the default for 128-wide fc2 tiles (every shape but Mixtral's;
# call 3: in-situ fc2 ⊕ combine per fwd+bwd Qwen1.5 1.19 -> 1.06 ms, DSv3 9.04 -> 8.28, Qwen2-57B / Phi even).
# (1) GPU tests with the new default: fused EP=1 (20) + compiled routing / plan / wgrad kernels + grouped_linear.
# (2) Qwen3-30B-A3B training at EP=1 (ffn 768: flattened), 2 layers, 25 it.: new default, then flatten off, then the
# default again. Prediction: losses bit-identical to session 10's auto run (flattening reorders tiles, not a tile's
# K sum); in-situ fwd.fc2_combine + bwd fc1-dgrad GPU time a few % lower; step time within EP=1's +-5% noise.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 280 python -m pytest -q tests/test_wgrad_kernel.py tests/test_grouped_linear.py \
  tests/test_routing_kernel.py tests/test_fused_gpu.py -k "ep1 or compiled or on_gpu" > $OUT/gpu_tests.log 2>&1
echo "GPU tests exit $? ($((SECONDS-T0)) s)"; grep -E "passed|failed|FAIL" $OUT/gpu_tests.log | tail -5
mkdir -p $OUT/train
for run in flat:'{}' noflat:'{"fc2_flatten": false}' flatB:'{}'; do
  name=${run%%:*}; cfg=${run#*:}
  EP=1 NPROC=1 LAYERS=2 ITERS=25 COMET=1 COMET_LAYER_TIMING=32 COMET_KERNEL_CONFIG="$cfg" \
    LOG=$OUT/train/qwen3_comet_$name.log timeout 110 bash examples/qwen3_30b_a3b_2gpu.sh > /dev/null 2>&1
  echo "qwen3 training comet $name exit $? ($((SECONDS-T0)) s)"
done
python examples/compare_runs.py $OUT/train/qwen3_comet_flat.log $OUT/train/qwen3_comet_noflat.log \
  $OUT/train/qwen3_comet_flatB.log --labels fc2_flatten no_flatten fc2_flatten_B --seq 4096 \
  --json $OUT/train_compare.json | tail -4
for n in flat noflat flatB; do echo "== $n"
  python -m comet_megatron.megatron.layer_timing $OUT/train/qwen3_comet_$n.log 2>/dev/null | grep -E " moe |fc2_combine|fc1_dgrad" | cut -c36-; done
grep -h "iteration" $OUT/train/qwen3_comet_flat.log | grep "lm loss" | head -3 | cut -c1-200
tar czf $OUT/runs.tgz -C $OUT train && rm -rf $OUT/train
ls $OUT
