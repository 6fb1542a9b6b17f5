# Session 16, call 2 (one GPU). The weight-gradient kernel's main_grad prefetch (PREFETCH_GRAD=2, evict_last) made the
# default after call 1 (-18 to -21% on DSv3 at EP=2 and Qwen3 at EP=1, no change on Mixtral-size experts, which
# `auto` gives to per-expert cuBLAS). GPU tests of the kernel with the new default on every load/reduce path;
# bench_wgrad on the remaining kernel shapes (Qwen1.5 at EP=2, Qwen3 at EP=2 and 4096 tokens) with PF 0 / 1 beside
# the default; Qwen3-30B-A3B training at EP=1 (2 layers, 128 local experts: `auto` = the kernel), 25 it.,
# COMET_LAYER_TIMING=64: default / PREFETCH_GRAD=0 / default.
# Prediction: in situ fc1 + fc2 wgrad per call ~1.9 -> ~1.5 ms (bench 2.41 -> 1.93 at EP=1 4096); step -5 to -10 ms
# (16 calls) - likely inside the step noise; losses identical (a prefetch changes no value).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 200 python -m pytest -q -p no:cacheprovider tests/test_wgrad_kernel.py \
  -m gpu > $OUT/gpu_tests.log 2>&1
echo "tests exit $? ($((SECONDS-T0)) s)"; tail -2 $OUT/gpu_tests.log
KC='[{"PREFETCH_GRAD":0},{"PREFETCH_GRAD":1}]'
timeout 100 python benchmarks/bench_wgrad.py --ep 2 --cases qwen1.5-moe-a2.7b --kernel-configs "$KC" \
  --out $OUT/wgrad_ep2 > /tmp/wgrad_ep2.log 2>&1
echo "wgrad ep2 exit $? ($((SECONDS-T0)) s)"
timeout 100 python benchmarks/bench_wgrad.py --ep 2 --tokens 4096 --cases qwen3-30b-a3b --kernel-configs "$KC" \
  --out $OUT/wgrad_ep2_4096 > /tmp/wgrad_ep2_4096.log 2>&1
echo "wgrad ep2 4096 exit $? ($((SECONDS-T0)) s)"
cat /tmp/wgrad_ep2.log /tmp/wgrad_ep2_4096.log > $OUT/wgrad_all.log; grep -E "^  fc" $OUT/wgrad_all.log
mkdir -p /tmp/train
train() {  # label, then env assignments
  local label=$1; shift
  env "$@" COMET=1 COMET_LAYER_TIMING=64 LAYERS=2 EP=1 NPROC=1 ITERS=25 LOG=/tmp/train/$label.log \
    timeout 110 bash examples/qwen3_30b_a3b_2gpu.sh > /dev/null 2>&1
  echo "train $label exit $? ($((SECONDS-T0)) s)"
}
train pf2_a COMET_WGRAD_ACCUMULATION=auto
train pf0 COMET_WGRAD_ACCUMULATION=auto COMET_WGRAD_KERNEL_CONFIG='{"PREFETCH_GRAD":0}'
train pf2_b COMET_WGRAD_ACCUMULATION=auto
L="pf2_a pf0 pf2_b"
python examples/compare_runs.py $(for l in $L; do echo /tmp/train/$l.log; done) --labels $L --skip 5 \
  --json $OUT/train_compare.json > $OUT/train_compare.txt 2>&1; tail -5 $OUT/train_compare.txt
python -m comet_megatron.megatron.layer_timing $(for l in $L; do echo /tmp/train/$l.log; done) \
  > $OUT/layer_timing.txt 2>&1
grep -E "wgrad| moe " $OUT/layer_timing.txt | grep -v Warn | head -24
rm -f $OUT/wgrad_*/*.png; ls -R $OUT | head -20
