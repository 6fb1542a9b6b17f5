# Session 8, call 3 (nvidia-h200). Call 2 (unprofiled host us, bench_host_path.py): before the counts read the host
# spends 320-460 us in build_local_routing (~14 torch ops and a radix sort of T*E int64 keys) and 90-140 us in the
# argsort for the top-k reduce; the layer's forward is host-paced on the fine-grained cases. Now: one Triton launch
# (kernels/routing.py, a counting sort over the map) gives the same slots and each token's slots; the dispatch
# kernels zero their own queues (one torch op less after the counts read); epoch is not specialized (one compilation
# per kernel instead of three: ==1, %16, other).
# 1. GPU tests EP=1 + the compiled routing kernel == the sort (exact) + the plan kernel.
# 2. host path per step (medians), three cases. Predicted: routing 320-460 -> ~80 us; argsort gone.
# 3. every case at EP=1 with Megatron and NCCL+grouped_mm (as s7_call3). Predicted: Qwen1.5 fwd 2.90 -> ~2.5 ms,
#    DSv3 10.5 -> ~10.1; Mixtral/Phi/Qwen2 within noise.
# 4. Qwen3-30B-A3B layers in training at EP=1 (2 layers, 30 it.), routing kernel vs COMET_ROUTING_KERNEL=0.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 240 python -m pytest -q tests/test_routing_kernel.py tests/test_fused_gpu.py \
  -k "routing or ep1 or device_plan" > $OUT/gpu_tests.log 2>&1
echo "GPU tests exit $? ($((SECONDS-T0)) s)"; tail -3 $OUT/gpu_tests.log
for c in qwen1.5-moe-a2.7b mixtral-8x7b dsv3-like; do
  timeout 120 python benchmarks/bench_host_path.py --case $c --iters 200 --out $OUT/host > $OUT/host_path_$c.log 2>&1
  echo "host path $c exit $? ($((SECONDS-T0)) s)"; grep -v -i warn $OUT/host_path_$c.log | tail -21 | head -20
done
timeout 420 python -m torch.distributed.run --standalone --nproc-per-node=1 benchmarks/bench_layer.py \
  --cases mixtral-8x7b,qwen1.5-moe-a2.7b,qwen2-57b-a14b,phi3.5-moe,dsv3-like --variants megatron,nccl_grouped_mm,comet \
  --profile-kernels 3 --out $OUT/layer > $OUT/bench_layer_ep1.log 2>&1
echo "layer table exit $? ($((SECONDS-T0)) s)"
grep -v -i warn $OUT/bench_layer_ep1.log | grep -A24 "^case " | head -24
for k in 1 0; do
  EP=1 NPROC=1 LAYERS=2 ITERS=30 COMET=1 COMET_LAYER_TIMING=32 COMET_ROUTING_KERNEL=$k LOG=$OUT/train/qwen3_comet_rk$k.log \
    timeout 200 bash examples/qwen3_30b_a3b_2gpu.sh > /dev/null 2>&1
  echo "qwen3 training routing kernel=$k exit $? ($((SECONDS-T0)) s)"
done
python examples/compare_runs.py $OUT/train/qwen3_comet_rk1.log $OUT/train/qwen3_comet_rk0.log --labels kernel sort \
  --seq 4096 --json $OUT/train/qwen3_compare.json | tail -6
grep "comet-layer-timing" $OUT/train/qwen3_comet_rk1.log | tail -1 | cut -c1-400
grep "comet-layer-timing" $OUT/train/qwen3_comet_rk0.log | tail -1 | cut -c1-400
cd $OUT && rm -f */*.png && tar czf results.tgz host layer train && rm -rf host layer train && ls $OUT
