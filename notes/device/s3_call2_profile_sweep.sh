# Session 3, call 2 (nvidia-h200-x2, carry .whl): where the layer's time goes, and 256-wide tiles.
# 1. Mixtral layer at the training's 4096 tokens/rank: Megatron, Comet (defaults) and three tile configs,
#    each profiled per kernel (bench_layer.py --profile-kernels).
# 2. Both Mixtral training runs profiled again (25 iterations), Comet with the 256-wide tiles; the traces
#    summarized with 40 kernels each so that Megatron's expert kernels are all listed.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
WIDE='{"fc2_block_n": 256, "dgrad_block_n": 256, "num_stages": 3}'
CFGS='[{"fc2_block_n": 256, "dgrad_block_n": 256, "num_stages": 3}, {"fc2_block_n": 256, "dgrad_block_n": 256, "num_stages": 4}, {"dgrad_block_n": 256}]'
timeout 200 python -m torch.distributed.run --standalone --nproc-per-node=2 benchmarks/bench_layer.py \
  --cases mixtral-8x7b --tokens 4096 --variants megatron,comet --comet-configs "$CFGS" --profile-kernels 3 \
  --out $OUT > $OUT/bench_sweep.log 2>&1
echo "bench exit $?"
grep -v -i warn $OUT/bench_sweep.log | grep -A200 "kernels, ms per" | head -120
rm -f $OUT/bench_layer_ep2.png
COMET_KERNEL_CONFIG="$WIDE" OUTDIR=$OUT ITERS=25 TIMEOUT=130 PROFILE=1 bash examples/compare_2gpu.sh mixtral_8x7b_2gpu.sh
python benchmarks/trace_summary.py $OUT/mixtral_8x7b_2gpu_megatron/torch_profile/rank-0.json.gz \
  $OUT/mixtral_8x7b_2gpu_comet/torch_profile/rank-0.json.gz --labels megatron comet --top 40 \
  --json $OUT/mixtral_8x7b_2gpu_traces.json > $OUT/traces_top40.txt 2>&1
rm -rf $OUT/mixtral_8x7b_2gpu_megatron $OUT/mixtral_8x7b_2gpu_comet $OUT/mixtral_8x7b_2gpu_compare.png
grep -v -i warn $OUT/bench_sweep.log | tail -12
