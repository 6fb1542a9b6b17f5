# Session 3, call 5 (nvidia-h200-x2, carry .whl): the fine-grained example with the current code (host-plan change),
# 40 iterations each, then the Qwen1.5-MoE layer at 8192 tokens if time remains.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUTDIR=$OUT ITERS=40 TIMEOUT=125 bash examples/compare_2gpu.sh qwen3_30b_a3b_2gpu.sh
timeout 70 python -m torch.distributed.run --standalone --nproc-per-node=2 benchmarks/bench_layer.py \
  --cases qwen1.5-moe-a2.7b --variants megatron,comet --out $OUT > $OUT/bench_qwen15.log 2>&1
echo "bench exit $?"; rm -f $OUT/bench_layer_ep2.png
grep -v -i warn $OUT/bench_qwen15.log | tail -5
