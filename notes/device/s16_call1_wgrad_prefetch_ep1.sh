# Session 16, call 1 (one GPU). The weight-gradient kernel with the main_grad tile prefetched into L2 at the start of
# each program (PREFETCH_GRAD=1 plain, 2 evict_last), so the fp32 read half of the read-modify-write overlaps the
# tile's GEMM and the bulk reduce-add finds its lines in L2. GPU tests (wgrad kernel, grouped linear); bench_wgrad at
# the training shapes (EP=1 / EP=2 at 4096 tokens: Mixtral, Qwen3; EP=2 default tokens: Phi, Qwen2-57B, DSv3) with
# the kernel's variants beside grouped_mm / per-expert cuBLAS; Mixtral training at EP=1 (2 layers, 20 it.,
# COMET_LAYER_TIMING=64): auto (per-expert cuBLAS) / kernel+PF2 / kernel / auto.
# Prediction: Mixtral EP=1 fc1 kernel 4.74 -> ~3.6 ms with the prefetch (toward grouped_mm's 3.24 plus a little),
# fc2 2.73 -> ~1.8; i.e. ahead of per-expert cuBLAS (4.60 / 2.25), ~1.5 ms per layer call in situ.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 200 python -m pytest -q -p no:cacheprovider tests/test_wgrad_kernel.py \
  tests/test_grouped_linear.py -m gpu > $OUT/gpu_tests.log 2>&1
echo "tests exit $? ($((SECONDS-T0)) s)"; tail -3 $OUT/gpu_tests.log
KC='[{"PREFETCH_GRAD":1},{"PREFETCH_GRAD":2},{"BN":256,"num_warps":8},{"BN":256,"num_warps":8,"PREFETCH_GRAD":2}]'
run_wgrad() {  # name ep tokens cases
  timeout 150 python benchmarks/bench_wgrad.py --ep $2 ${3:+--tokens $3} --cases $4 --kernel-configs "$KC" \
    --out $OUT/wgrad_$1 > /tmp/wgrad_$1.log 2>&1
  echo "wgrad $1 exit $? ($((SECONDS-T0)) s)"; grep -E "^  fc|^case|^[a-z0-9.-]+ +fc" /tmp/wgrad_$1.log
}
run_wgrad ep1_4096 1 4096 mixtral-8x7b,qwen3-30b-a3b
run_wgrad ep2_4096 2 4096 mixtral-8x7b
run_wgrad ep2 2 "" phi3.5-moe,qwen2-57b-a14b,dsv3-like
mkdir -p /tmp/train
train() {  # label, then env assignments
  local label=$1; shift
  env "$@" COMET=1 COMET_LAYER_TIMING=64 LAYERS=2 EP=1 NPROC=1 ITERS=20 LOG=/tmp/train/$label.log \
    timeout 120 bash examples/mixtral_8x7b_2gpu.sh > /dev/null 2>&1
  echo "train $label exit $? ($((SECONDS-T0)) s)"
}
train auto_a COMET_WGRAD_ACCUMULATION=auto
train kernel_pf2 COMET_WGRAD_ACCUMULATION=kernel COMET_WGRAD_KERNEL_CONFIG='{"PREFETCH_GRAD":2}'
train kernel_pf0 COMET_WGRAD_ACCUMULATION=kernel
train auto_b COMET_WGRAD_ACCUMULATION=auto
L="auto_a kernel_pf2 kernel_pf0 auto_b"
python examples/compare_runs.py $(for l in $L; do echo /tmp/train/$l.log; done) --labels $L --skip 5 \
  --json $OUT/train_compare.json > $OUT/train_compare.txt 2>&1; cat $OUT/train_compare.txt | tail -8
python -m comet_megatron.megatron.layer_timing $(for l in $L; do echo /tmp/train/$l.log; done) \
  > $OUT/layer_timing.txt 2>&1
grep -E "wgrad| moe " $OUT/layer_timing.txt | grep -v Warn | head -24
cat /tmp/wgrad_*.log > $OUT/wgrad_all.log
tar czf $OUT/train_logs.tgz -C /tmp/train . 2>/dev/null
rm -f $OUT/wgrad_*/*.png; ls -R $OUT | head -20
