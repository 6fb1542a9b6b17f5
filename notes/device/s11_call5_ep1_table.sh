# Session 11, call 5 (nvidia-h200). The five issue cases at EP=1 with the current defaults (fc2_flatten on for the
# 128-wide shapes), Megatron / NCCL+_grouped_mm / Comet side by side, kernels profiled: the standing after sessions
# 8-11 (last full EP=1 table with baselines: session 7, Mixtral fwd/fwd+bwd 1.44/1.38x floor, Qwen1.5 4.02/2.75,
# Qwen2-57B 1.96/1.66, Phi 1.78/1.57, DSv3 2.86/2.98). Prediction: Comet fastest on every case; fine-grained
# fwd+bwd 3-10% lower than session 7 (routing kernels s8, flattened fc2 s11), Mixtral / Phi within noise.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
timeout 500 python -m torch.distributed.run --standalone --nproc-per-node=1 benchmarks/bench_layer.py \
  --cases mixtral-8x7b,qwen1.5-moe-a2.7b,qwen2-57b-a14b,phi3.5-moe,dsv3-like --variants megatron,nccl_grouped_mm,comet \
  --profile-kernels 3 --out $OUT > $OUT/bench_layer_ep1.log 2>&1
echo "bench exit $? ($((SECONDS-T0)) s)"
grep -v -i warn $OUT/bench_layer_ep1.log | grep -A30 "^case " | head -40
ls $OUT
