# Session 8, call 1 (nvidia-h200, one GPU; no 2-GPU machine lent again). The fine-grained cases are 2-4x the floor.
# A. Where the host spends Qwen1.5-MoE's forward (EP=1: 2.90 ms wall vs ~1.4 ms of forward kernels): cProfile of
#    10 forwards and Chrome traces, Qwen1.5 and Mixtral (the s7_call4 script, never run).
#    Predicted: the router's small kernels plus the post-read host path; a per-expert Python loop if there is one.
# B. block_m 64 for the fine-grained GEMMs, whole layer fwd+bwd at EP=1 with per-kernel times. 128-row tiles waste
#    ~15% of Qwen1.5's rows (546 per expert) and up to ~40% of DSv3's (~128 +- 11 per expert).
#    Predicted: Qwen1.5 and DSv3 faster by 5-15% in the GEMM kernels; Qwen2-57B (1024 rows) about even.
# C. The same as GEMM cores alone against cuBLAS (Qwen1.5, two ranks simulated), with 4 warps for 64-row tiles.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
timeout 240 python -m torch.distributed.run --standalone --nproc-per-node=1 benchmarks/bench_layer.py \
  --cases qwen1.5-moe-a2.7b,mixtral-8x7b --variants nccl_grouped_mm,comet --fwd-only --host-profile 10 \
  --profile-kernels 3 --trace-dir $OUT/traces --out $OUT/host > $OUT/bench_host_ep1.log 2>&1
echo "A: host profile exit $? ($((SECONDS-T0)) s)"
grep -v -i warn $OUT/bench_host_ep1.log | grep -A14 "^case " | head -14
for t in $OUT/traces/*.json; do echo "== $t"; python benchmarks/trace_summary.py $t --top 12 2>&1 | head -40; done \
  > $OUT/trace_summaries.txt
timeout 240 python -m torch.distributed.run --standalone --nproc-per-node=1 benchmarks/bench_layer.py \
  --cases qwen1.5-moe-a2.7b,dsv3-like,qwen2-57b-a14b --variants comet --profile-kernels 3 \
  --comet-configs '[{"block_m": 64}]' --out $OUT/block_m > $OUT/bench_block_m_ep1.log 2>&1
echo "B: block_m layer sweep exit $? ($((SECONDS-T0)) s)"
grep -v -i warn $OUT/bench_block_m_ep1.log | grep -A12 "^case " | head -24
timeout 150 python benchmarks/bench_gemm_core.py --case qwen1.5-moe-a2.7b --iters 20 --out $OUT/gemm --configs \
  '[{}, {"block_m": 64}, {"block_m": 64, "num_warps": 4}, {"block_m": 64, "fc1_block_n": 256}]' \
  > $OUT/gemm_core_qwen15.log 2>&1
echo "C: gemm core exit $? ($((SECONDS-T0)) s)"; grep -v -i warn $OUT/gemm_core_qwen15.log | tail -16
head -90 $OUT/trace_summaries.txt
cd $OUT && rm -f */*.png && tar czf results.tgz host block_m gemm traces && rm -rf host block_m gemm traces && ls $OUT
