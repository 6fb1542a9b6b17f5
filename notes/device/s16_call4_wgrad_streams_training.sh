# Session 16, call 4 (one GPU). Per-expert weight gradients on 3 CUDA streams the default (call 3: fc1 -4 to -9% on
# Mixtral / Phi / Qwen2-57B shapes). GPU test of the grouped linear layer (per_expert mode now on 3 streams); Mixtral
# training at EP=1, 2 layers, 20 it., COMET_LAYER_TIMING=64: COMET_WGRAD_STREAMS 3 / 1 / 3.
# Prediction: in-situ fc1 + fc2 wgrad 6.64 -> ~6.3 ms per call (bench: 4.58 + 2.24 -> 4.50 + 2.16); step -3 to -6 ms,
# inside the noise; losses identical (each expert's GEMM is the same cuBLAS call, on another stream).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
COMET_TEST_DEVICE=cuda timeout 100 python -m pytest -q -p no:cacheprovider tests/test_grouped_linear.py -m gpu \
  > $OUT/gpu_tests.log 2>&1
echo "tests exit $? ($((SECONDS-T0)) s)"; tail -2 $OUT/gpu_tests.log
mkdir -p /tmp/train
train() {  # label, then env assignments
  local label=$1; shift
  env "$@" COMET=1 COMET_LAYER_TIMING=64 LAYERS=2 EP=1 NPROC=1 ITERS=20 LOG=/tmp/train/$label.log \
    timeout 120 bash examples/mixtral_8x7b_2gpu.sh > /dev/null 2>&1
  echo "train $label exit $? ($((SECONDS-T0)) s)"
}
train streams3_a COMET_WGRAD_STREAMS=3
train streams1 COMET_WGRAD_STREAMS=1
train streams3_b COMET_WGRAD_STREAMS=3
L="streams3_a streams1 streams3_b"
python examples/compare_runs.py $(for l in $L; do echo /tmp/train/$l.log; done) --labels $L --skip 5 \
  --json $OUT/train_compare.json > $OUT/train_compare.txt 2>&1; tail -4 $OUT/train_compare.txt
python -m comet_megatron.megatron.layer_timing $(for l in $L; do echo /tmp/train/$l.log; done) \
  > $OUT/layer_timing.txt 2>&1
grep -E "wgrad| moe " $OUT/layer_timing.txt | grep -v Warn | head -24
ls $OUT
