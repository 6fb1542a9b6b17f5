# Session 7, call 4 (nvidia-h200, one GPU). Call 3 found Qwen1.5-MoE at EP=1 with 2.90 ms forward wall but ~1.4 ms
# of forward kernels: the GPU idles ~1.5 ms per forward on the fine-grained case. Where does the host spend it?
# cProfile of 10 forwards (--host-profile) and a Chrome trace per variant (--trace-dir), Qwen1.5 and Mixtral.
# Predicted: the router's small kernels and Comet's post-read path, a per-expert Python loop if one exists.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
timeout 300 python -m torch.distributed.run --standalone --nproc-per-node=1 benchmarks/bench_layer.py \
  --cases qwen1.5-moe-a2.7b,mixtral-8x7b --variants nccl_grouped_mm,comet --fwd-only --host-profile 10 \
  --profile-kernels 3 --trace-dir $OUT/traces --out $OUT > $OUT/bench_host_ep1.log 2>&1
echo "bench exit $? ($((SECONDS-T0)) s)"
grep -v -i warn $OUT/bench_host_ep1.log | grep -A30 "^case " | head -14
for t in $OUT/traces/*.json; do python benchmarks/trace_summary.py $t --top 12 2>&1 | head -40; done > $OUT/trace_summaries.txt
head -120 $OUT/trace_summaries.txt
tar czf $OUT/traces.tgz -C $OUT traces && rm -rf $OUT/traces
rm -f $OUT/*.png; ls $OUT
