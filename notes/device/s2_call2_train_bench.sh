# session 2, call 2: Mixtral-shaped 100-step training, Megatron alltoall vs --moe-comet; then the layer benchmark
# (fwd+bwd) with the torch-math and the fused backward side by side.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD
OUTDIR=$OUT ITERS=100 TIMEOUT=200 bash examples/compare_2gpu.sh mixtral_8x7b_2gpu.sh
for f in $OUT/*_comet.log $OUT/*_megatron.log; do echo "== $f"; grep -E "Error|error:|Traceback|iteration +(1|2|50|100)/" $f | grep -v -i warn | tail -8 | cut -c1-400; done
timeout 170 python -m torch.distributed.run --standalone --nproc-per-node=2 benchmarks/bench_layer.py \
  --cases mixtral-8x7b,qwen1.5-moe-a2.7b --variants megatron,nccl_grouped_mm,comet,comet_fused_bwd --out $OUT > $OUT/bench.log 2>&1
grep -v -i "warn" $OUT/bench.log | tail -25
