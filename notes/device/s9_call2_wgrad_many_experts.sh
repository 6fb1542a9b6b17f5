# Session 9, call 2 (nvidia-h200). Call 1: per-expert accumulating GEMMs beat grouped GEMM + add on every case up to
# 32 local experts (Mixtral 4 experts fc1 7.89 -> 6.09 ms, Qwen1.5 30 experts 1.24 -> 1.04, Qwen2-57B 32 experts
# 5.73 -> 4.62), and Mixtral training at EP=1 went 738.6 / 732.8 -> 680.4 ms/step (Megatron 749.9). The DSv3 row ran
# out of memory in the benchmark's own error check (fixed: per expert). Where does the per-expert loop stop paying?
# Predicted: still ahead at 64 experts (Qwen2 EP=1), behind at 128-256 experts of 256 rows (launch-bound: ~128 x
# 10-20 us host per GEMM). Then Qwen3 training at EP=1 (128 local experts) with each method, to set the threshold
# where training runs, not only in the benchmark.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
timeout 150 python benchmarks/bench_wgrad.py --ep 2 --cases dsv3-like,qwen1.5-moe-a2.7b --out $OUT/wgrad_ep2 > $OUT/wgrad_ep2.log 2>&1
echo "bench_wgrad ep2 exit $? ($((SECONDS-T0)) s)"; grep -A4 "^case " $OUT/wgrad_ep2.log
timeout 150 python benchmarks/bench_wgrad.py --ep 1 --tokens 4096 --cases qwen3-30b-a3b,qwen2-57b-a14b,dsv3-like \
  --out $OUT/wgrad_ep1 > $OUT/wgrad_ep1.log 2>&1
echo "bench_wgrad ep1 exit $? ($((SECONDS-T0)) s)"; grep -A6 "^case " $OUT/wgrad_ep1.log; grep "^  fc" $OUT/wgrad_*.log | cut -c1-250
for run in ddp_add:megatron per_expert:per_expert grouped:grouped; do
  name=${run%%:*}; mode=${run##*:}
  EP=1 NPROC=1 LAYERS=2 ITERS=25 COMET=1 COMET_LAYER_TIMING=32 COMET_WGRAD_ACCUMULATION=$mode \
    LOG=$OUT/train/qwen3_comet_$name.log timeout 120 bash examples/qwen3_30b_a3b_2gpu.sh > /dev/null 2>&1
  echo "qwen3 training comet wgrad=$name exit $? ($((SECONDS-T0)) s)"
done
python examples/compare_runs.py $OUT/train/qwen3_comet_ddp_add.log $OUT/train/qwen3_comet_per_expert.log \
  $OUT/train/qwen3_comet_grouped.log --labels ddp_add per_expert grouped --seq 4096 --json $OUT/train_compare.json | tail -4
for n in ddp_add per_expert grouped; do echo "== $n"
  python -m comet_megatron.megatron.layer_timing $OUT/train/qwen3_comet_$n.log 2>/dev/null | grep -E " (moe|experts) | bwd\.fc[12]_wgrad" | cut -c36-; done
tar czf $OUT/runs.tgz -C $OUT train wgrad_ep2 wgrad_ep1 && rm -rf $OUT/train $OUT/wgrad_ep2 $OUT/wgrad_ep1
ls $OUT
