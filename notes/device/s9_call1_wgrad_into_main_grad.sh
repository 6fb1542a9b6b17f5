# Session 9, call 1 (nvidia-h200; no 2-GPU machine lent again). Training adds every expert weight gradient into
# Megatron's fp32 main_grad: without gradient-accumulation fusion (no Apex/TE, as in our examples) the bf16 gradient is
# written, then DDP's hook reads it back and adds it (read bf16 + read/write fp32). Mixtral at EP=2, 4096 tokens:
# 704M local expert parameters -> ~7 GB of traffic, ~1.8 ms per layer backward that the layer benchmark never sees.
# New: Comet's experts sum into main_grad themselves, by one cuBLAS GEMM per expert with beta=1 and an fp32 output
# (COMET_WGRAD_ACCUMULATION=auto: per-expert with <= 16 local experts, else grouped GEMM + add).
# Predicted: bench_wgrad per_expert faster than grouped+add by ~the add's time on Mixtral/Phi (fc1 ~1.2x),
# slower on the 30-128-expert cases (launches); Mixtral training at EP=1 (2 layers, 8 local experts): in-situ bwd per
# layer call ~3 ms lower (1.4G params per layer: ~14 GB of add traffic), step ~-40 ms of ~740 (16 calls).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 200 python -m pytest -q tests/test_grouped_linear.py \
  tests/test_routing_kernel.py tests/test_fused_gpu.py -k "gpu or compiled or ep1" > $OUT/gpu_tests.log 2>&1
echo "GPU tests exit $? ($((SECONDS-T0)) s)"; tail -2 $OUT/gpu_tests.log
timeout 120 python benchmarks/bench_wgrad.py --ep 2 --out $OUT/wgrad_ep2 > $OUT/wgrad_ep2.log 2>&1
echo "bench_wgrad ep2 exit $? ($((SECONDS-T0)) s)"; grep -A12 "^case " $OUT/wgrad_ep2.log
for tok_ep in 4096:2 4096:1; do
  timeout 60 python benchmarks/bench_wgrad.py --ep ${tok_ep#*:} --tokens ${tok_ep%:*} --cases mixtral-8x7b,phi3.5-moe \
    --out $OUT/wgrad_t${tok_ep%:*}_ep${tok_ep#*:} > $OUT/wgrad_t${tok_ep%:*}_ep${tok_ep#*:}.log 2>&1
  echo "bench_wgrad $tok_ep exit $?"; grep -A5 "^case " $OUT/wgrad_t${tok_ep%:*}_ep${tok_ep#*:}.log
done
for run in megatronA:megatron auto:auto megatronB:megatron; do
  name=${run%%:*}; mode=${run##*:}
  EP=1 NPROC=1 LAYERS=2 ITERS=30 COMET=1 COMET_LAYER_TIMING=32 COMET_WGRAD_ACCUMULATION=$mode \
    LOG=$OUT/train/mixtral_comet_$name.log timeout 130 bash examples/mixtral_8x7b_2gpu.sh > /dev/null 2>&1
  echo "mixtral training comet wgrad=$name exit $? ($((SECONDS-T0)) s)"
done
EP=1 NPROC=1 LAYERS=2 ITERS=30 COMET=0 LOG=$OUT/train/mixtral_megatron.log timeout 120 \
  bash examples/mixtral_8x7b_2gpu.sh > /dev/null 2>&1
echo "mixtral training megatron exit $? ($((SECONDS-T0)) s)"
python examples/compare_runs.py $OUT/train/mixtral_comet_megatronA.log $OUT/train/mixtral_comet_auto.log \
  $OUT/train/mixtral_comet_megatronB.log $OUT/train/mixtral_megatron.log --labels comet_ddp_add comet_fused comet_ddp_add_B megatron \
  --seq 4096 --json $OUT/train_compare.json | tail -6
for n in megatronA auto megatronB; do echo "== $n"
  python -m comet_megatron.megatron.layer_timing $OUT/train/mixtral_comet_$n.log | grep -E " (moe|experts) | bwd\.fc[12]_wgrad" | cut -c36-; done
tar czf $OUT/runs.tgz -C $OUT train wgrad_ep2 wgrad_t4096_ep2 wgrad_t4096_ep1 && rm -rf $OUT/train $OUT/wgrad_ep2 $OUT/wgrad_t4096_ep2 $OUT/wgrad_t4096_ep1
ls $OUT
