# Session 16, call 3 (one GPU). Per-expert cuBLAS weight gradients (beta = 1 into fp32 main_grad, `auto`'s choice for
# Mixtral / Phi / Qwen2-57B) spread round-robin over 2 or 3 CUDA streams, so that one expert's GEMM main loop can run
# while another's read-modify-write epilogue waits on HBM (on one stream the two never overlap across experts).
# GPU test of the streams path; bench_wgrad with --per-expert-streams 2 and 3 on Mixtral (EP=1 / EP=2 at 4096 tokens:
# the training shapes) and Phi / Qwen2-57B at EP=2.
# Prediction: -5 to -15% on Mixtral fc1 (EP=1 per_expert 4.58 ms against grouped_mm 3.12: the RMW ~1.9 ms is not
# hidden today); less at EP=2 (4 experts, half the RMW).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
COMET_TEST_DEVICE=cuda timeout 100 python -m pytest -q -p no:cacheprovider tests/test_grouped_linear.py -m gpu \
  > $OUT/gpu_tests.log 2>&1
echo "tests exit $? ($((SECONDS-T0)) s)"; tail -2 $OUT/gpu_tests.log
for S in 2 3; do
  for run in "ep1_4096 1 4096 mixtral-8x7b" "ep2_4096 2 4096 mixtral-8x7b" "ep2 2 0 phi3.5-moe,qwen2-57b-a14b"; do
    set -- $run
    T=$([ "$3" = 0 ] && echo "" || echo "--tokens $3")
    timeout 100 python benchmarks/bench_wgrad.py --ep $2 $T --cases $4 --per-expert-streams $S \
      --out /tmp/w/s${S}_$1 > /tmp/w_s${S}_$1.log 2>&1
    echo "streams $S $1 exit $? ($((SECONDS-T0)) s)"
    grep -E "^  fc" /tmp/w_s${S}_$1.log | sed -E 's/grouped\+add [^)]*\) +//; s/kernel [^)]*\) +//' | cut -c1-200
  done
done
mkdir -p $OUT/w && for f in /tmp/w/*/bench_wgrad.json; do cp $f $OUT/w/$(basename $(dirname $f)).json; done
cat /tmp/w_*.log > $OUT/wgrad_all.log; ls $OUT $OUT/w
