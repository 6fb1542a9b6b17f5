# Session 6, call 3 (nvidia-h200, one GPU; the 2-GPU machine is still not lent; carry .whl).
# 1. GPU tests at EP=1 with the backward now ordered dispatch_dgrad -> fc1 dgrad+combine -> fc1 wgrad -> fc2 wgrad ->
#    reduce (every saved activation freed once read).
# 2. Peak memory, Mixtral 4096 / Phi 8192 at EP=1 (call 2, the previous order: Comet 3.16 vs Megatron 2.88 GiB,
#    2.92 vs 2.77). Predicted now: all weight gradients + fc2's operands [R, F + H]: ~2.90 and ~2.66 GiB.
# 3. Call 2's training pair at EP=1 showed Comet's MoE layers 68 ms/step faster on the GPU (sum of in-situ sections)
#    but the step equal (739 vs 742 ms). Profile iterations 20-21 of both runs (no timing hooks) and compare GPU
#    busy/idle and kernels.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 100 python -m pytest -q -x tests/test_fused_gpu.py > $OUT/fused_gpu_tests.log 2>&1
echo "fused gpu tests exit $? ($((SECONDS-T0)) s)"; tail -1 $OUT/fused_gpu_tests.log
for spec in "mixtral-8x7b 4096" "phi3.5-moe 8192"; do set -- $spec
  timeout 100 python -m torch.distributed.run --standalone --nproc-per-node=1 benchmarks/bench_layer.py \
    --cases $1 --tokens $2 --variants megatron,comet --iters 10 --out $OUT/bench_$1 > $OUT/bench_$1.log 2>&1
  echo "bench $1 exit $? ($((SECONDS-T0)) s)"; grep -v -i warn $OUT/bench_$1.log | grep -A3 "^case"
done
EP=1 NPROC=1 LAYERS=2 PROFILE=1 PROFILE_START=20 PROFILE_END=22 OUTDIR=$OUT/train ITERS=24 TIMEOUT=130 \
  bash examples/compare_2gpu.sh mixtral_8x7b_2gpu.sh | tail -45
echo "training done ($((SECONDS-T0)) s)"
cp $OUT/train/*.log $OUT/train/*.json $OUT/ 2>/dev/null; rm -rf $OUT/train
tar czf $OUT/bench.tgz -C $OUT bench_mixtral-8x7b bench_phi3.5-moe && rm -rf $OUT/bench_mixtral-8x7b $OUT/bench_phi3.5-moe
ls $OUT
