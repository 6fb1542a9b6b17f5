# Session 14, call 4 (nvidia-h200-x2, carry .whl): the first 2-GPU machine since session 5, with ~1300 s of device
# budget left, so the three calls prepared in sessions 9-11 (next_ep2_call1_tests.sh, next_ep2_call2_training.sh,
# run_device.sh) are folded into one. Nothing since session 5 had run at EP=2: the reordered backward (s6), the plan
# built on the GPU (s7), routing kernels and self-zeroing queues (s8), the experts' own accumulation into main_grad
# (s9), the weight-gradient kernel's TMA loads and bulk reduce-add (s10), fc2 ⊕ combine's flattened tile loop (s11),
# the fast launch path (s14).
# 1. GPU tests at EP=2 (fused layer == reference for every case and both backward modes; compiled routing / wgrad /
#    launcher). Predicted: all pass.
# 2. Mixtral training pair at EP=2 (examples/mixtral_8x7b_2gpu.sh: 4 layers, seq 4096), 60 it., Megatron then Comet.
#    Predicted: ~1.02-1.05x Megatron (s5: 0.985x; s9's main_grad accumulation gained 55 ms/step at EP=1).
# 3. The five issue cases at EP=2, Megatron / NCCL+_grouped_mm / Comet, fwd and fwd+bwd. Predicted: Comet fastest on
#    every case; Mixtral fwd ~1.35x floor (s5 1.42), fine-grained below s5 (Qwen1.5 s5 5.38x fwd).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
nvidia-smi -L
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 200 python -m pytest -q -p no:cacheprovider --durations=3 \
  tests/test_fused_gpu.py tests/test_routing_kernel.py tests/test_wgrad_kernel.py tests/test_launcher.py -m gpu \
  -k "ep2 or compiled or cached" > $OUT/gpu_tests_ep2.log 2>&1
echo "GPU tests exit $? ($((SECONDS-T0)) s)"; grep -E "passed|failed|FAIL|Error" $OUT/gpu_tests_ep2.log | tail -6
mkdir -p $OUT/train
OUTDIR=$OUT/train ITERS=60 TIMEOUT=170 bash examples/compare_2gpu.sh mixtral_8x7b_2gpu.sh | tail -4
echo "training done ($((SECONDS-T0)) s)"
timeout 220 python -m torch.distributed.run --standalone --nproc-per-node=2 benchmarks/bench_layer.py \
  --cases mixtral-8x7b,qwen1.5-moe-a2.7b,qwen2-57b-a14b,phi3.5-moe,dsv3-like --variants megatron,nccl_grouped_mm,comet \
  --out $OUT > $OUT/bench_layer_ep2.log 2>&1
echo "bench exit $? ($((SECONDS-T0)) s)"; grep -v -i warn $OUT/bench_layer_ep2.log | grep -A22 "^case " | head -24
mv $OUT/train/*_compare.json $OUT/ 2>/dev/null; tar czf $OUT/train.tgz -C $OUT train && rm -rf $OUT/train
ls $OUT
