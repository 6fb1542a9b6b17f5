# Ran at commit 5ab5436 (the persistent grid, reverted after this call: every persistent variant was slower).
# Session 16, call 6 (one GPU). The weight-gradient kernel with a persistent grid (PROGRAMS_PER_SM, a plain loop over
# tiles, not flattened): a persistent loop keeps the fp32 staging tile apart from the pipeline buffers (Triton 3.6:
# 164 KB for 128 x 128 with 3 stages, 229 KB for 128 x 256 with 2), so one program per SM; the point is the larger
# tile's lower operand traffic (128 x 256: 85 FLOP per byte read from L2 against 64 for 128 x 128; at 128 x 128 the
# Mixtral fc1 kernel moves ~30 GB from L2 in 4.6 ms). GPU test (all paths incl. persistent); bench_wgrad on Mixtral
# EP=1 / EP=2 at 4096 tokens, Qwen3 EP=1 4096 and DSv3 EP=2, beside per-expert cuBLAS on 3 streams.
# Prediction: no variant beats the default 128 x 128 per-tile kernel by more than 5% (session 11's persistent kernels
# lost: one program per SM overlaps no epilogue); if 128 x 256 persistent gains on Mixtral, it is the L2 traffic.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 200 python -m pytest -q -p no:cacheprovider tests/test_wgrad_kernel.py \
  -m gpu > $OUT/gpu_tests.log 2>&1
echo "tests exit $? ($((SECONDS-T0)) s)"; tail -2 $OUT/gpu_tests.log
KC='[{"PROGRAMS_PER_SM":1,"BN":256,"num_warps":8,"num_stages":2},{"PROGRAMS_PER_SM":1,"num_warps":8},
{"BN":256,"num_warps":8,"num_stages":2}]'
for run in "ep1_4096 1 4096 mixtral-8x7b,qwen3-30b-a3b" "ep2_4096 2 4096 mixtral-8x7b" "ep2 2 0 dsv3-like"; do
  set -- $run
  T=$([ "$3" = 0 ] && echo "" || echo "--tokens $3")
  timeout 120 python benchmarks/bench_wgrad.py --ep $2 $T --cases $4 --per-expert-streams 3 --kernel-configs "$KC" \
    --out /tmp/w/$1 > /tmp/w_$1.log 2>&1
  echo "$1 exit $? ($((SECONDS-T0)) s)"
  grep -E "^  fc" /tmp/w_$1.log | sed -E 's/grouped\+add [^)]*\) +//; s/err .*//'
done
mkdir -p $OUT/w && for d in /tmp/w/*/; do cp $d/bench_wgrad.json $OUT/w/$(basename $d).json; done
cat /tmp/w_*.log > $OUT/wgrad_all.log; ls $OUT $OUT/w
