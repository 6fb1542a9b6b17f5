# Session 23, call 4 (one GPU). Phi-3.5's fc1 data-gradient core got 14% slower with the aligned peer stores in
# bench_gemm_core (EP=2 simulated, 8192 tokens: old 2.88-3.01 ms, new 3.23-3.67 over 6 rounds, calls 2-3) while the EP=1
# layer at 4096 tokens showed fc2_combine_kernel -0.9%. Which condition brings it: 8192 tokens, or the simulated peer?
# Phi's cores at (EP 2, 4096 tokens) and (EP 1, 8192 tokens), old / new twice each; then the EP=1 layer at 8192 tokens
# (kernel profile, old / new twice).
source notes/device/common.sh
for setting in "--ep 2 --tokens 4096" "--ep 1 --tokens 8192" "--ep 2 --tokens 8192"; do
  for v in old new old new; do
    script=benchmarks/bench_gemm_core.py; [ $v = old ] && script=tmp/ab_old/benchmarks/bench_gemm_core.py
    timeout 60 python $script --case phi3.5-moe $setting --iters 15 --out /tmp/core_$v > /tmp/core_$v.log 2>&1
    echo "$setting $v $(grep -E '^(fc2 |fc1_dgrad|fc1\+push)' /tmp/core_$v.log | awk '{print $1, $3}' | tr '\n' ' ')"
  done
done
for v in old new old new; do
  root=$PWD; [ $v = old ] && root=$PWD/tmp/ab_old
  PYTHONPATH=/tmp/site:$root timeout 100 python -m torch.distributed.run --standalone --nproc-per-node=1 \
    $root/benchmarks/bench_layer.py --cases phi3.5-moe --tokens 8192 --variants comet --profile-kernels 5 \
    --iters 10 --out /tmp/layer_$v > /tmp/layer_$v.log 2>&1
  echo "layer $v exit $? $(grep -E 'fc2_combine_kernel|dispatch_dgrad_kernel|dispatch_fc1_kernel|kernels, ms' /tmp/layer_$v.log | awk '{print $1, $2, $NF}' | tr '\n' ' ')"
done
