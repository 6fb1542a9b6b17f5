# Session 4, call 6 (nvidia-h200-x2, carry .whl): (1) training with the router forced to balance
# (--moe-router-force-load-balancing, both runs) - is uneven routing what turns the layer benchmark's lead into a
# training loss? (2) the benchmark table with the current code, every case, fwd+bwd: Megatron, NCCL+grouped_mm, Comet.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
EXTRA="--moe-router-force-load-balancing" OUTDIR=$OUT/balanced ITERS=30 TIMEOUT=150 \
  bash examples/compare_2gpu.sh mixtral_8x7b_2gpu.sh 2>&1 | tail -4
rm -f $OUT/balanced/*.png
timeout 290 python -m torch.distributed.run --standalone --nproc-per-node=2 benchmarks/bench_layer.py \
  --variants megatron,nccl_grouped_mm,comet --out $OUT > $OUT/bench_table.log 2>&1
echo "bench exit $?"
grep -v -i warn $OUT/bench_table.log | tail -28
