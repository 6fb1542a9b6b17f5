# Session 9, call 3 (nvidia-h200). Call 2: per-expert cuBLAS GEMMs stop paying with many small experts — host-bound
# (Qwen3 at EP=1, 128 experts: 5.1 ms of host per GEMM; training 538.4 ms/step vs 492.3 with DDP's add, 478.8 with the
# grouped GEMM + add inside the layer). New: one Triton launch for all experts that sums dy_e^T x_e into the fp32
# main_grad tile in place (kernels/wgrad.py; auto: per-expert cuBLAS when each expert's GEMM >= 32 GFLOP, else this).
# Predicted: kernel below grouped+add wherever the add dominates (DSv3 fc1 17.6 ms -> ~8; Qwen3 fc1 2.0 -> ~0.9);
# behind per_expert on Mixtral-size experts (pointer loads, ~80% of cuBLAS); Qwen3 training auto < 478.8 ms/step.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
COMET_TEST_DEVICE=cuda timeout 150 python -m pytest -q tests/test_wgrad_kernel.py tests/test_grouped_linear.py -k "compiled or gpu" \
  > $OUT/gpu_tests.log 2>&1
echo "GPU tests exit $? ($((SECONDS-T0)) s)"; tail -2 $OUT/gpu_tests.log
KC='[{"BN": 256}, {"num_warps": 4, "num_stages": 4}, {"BK": 32, "num_stages": 4}]'
timeout 200 python benchmarks/bench_wgrad.py --ep 2 --kernel-configs "$KC" --out $OUT/wgrad_ep2 > $OUT/wgrad_ep2.log 2>&1
echo "bench_wgrad ep2 exit $? ($((SECONDS-T0)) s)"
timeout 120 python benchmarks/bench_wgrad.py --ep 1 --tokens 4096 --cases qwen3-30b-a3b,mixtral-8x7b,dsv3-like \
  --kernel-configs "$KC" --out $OUT/wgrad_ep1 > $OUT/wgrad_ep1.log 2>&1
echo "bench_wgrad ep1 exit $? ($((SECONDS-T0)) s)"
grep "^  fc" $OUT/wgrad_ep2.log $OUT/wgrad_ep1.log | sed 's/grouped_mm/gm/;s/grouped+add/g+a/' | cut -c20-330
grep -A12 "^case " $OUT/wgrad_ep2.log; grep -A8 "^case " $OUT/wgrad_ep1.log
for run in ddp_add:megatron auto:auto ddp_addB:megatron; do
  name=${run%%:*}; mode=${run##*:}
  EP=1 NPROC=1 LAYERS=2 ITERS=25 COMET=1 COMET_LAYER_TIMING=32 COMET_WGRAD_ACCUMULATION=$mode \
    LOG=$OUT/train/qwen3_comet_$name.log timeout 110 bash examples/qwen3_30b_a3b_2gpu.sh > /dev/null 2>&1
  echo "qwen3 training comet wgrad=$name exit $? ($((SECONDS-T0)) s)"
done
python examples/compare_runs.py $OUT/train/qwen3_comet_ddp_add.log $OUT/train/qwen3_comet_auto.log \
  $OUT/train/qwen3_comet_ddp_addB.log --labels ddp_add auto_kernel ddp_add_B --seq 4096 --json $OUT/train_compare.json | tail -4
for n in ddp_add auto ddp_addB; do echo "== $n"
  python -m comet_megatron.megatron.layer_timing $OUT/train/qwen3_comet_$n.log 2>/dev/null | grep -E " (moe|experts) | bwd\.fc[12]_wgrad" | cut -c36-; done
tar czf $OUT/runs.tgz -C $OUT train wgrad_ep2 wgrad_ep1 && rm -rf $OUT/train $OUT/wgrad_ep2 $OUT/wgrad_ep1
ls $OUT
