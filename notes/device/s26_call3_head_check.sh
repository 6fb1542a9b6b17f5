# Session 26, call 3 (one H200): the state the EP=2 issues are handed over in. Every GPU test the README lists (the
# EP=2 cases skip on one GPU), then (if time is left) Mixtral's 2-layer example at EP=1 on one GPU, Megatron then Comet, 20 iterations.
# Kernels unchanged since session 24/25 except docstrings. Predicted: all pass; Comet ~1.14x (s15: 668.5 vs 765.5).
source notes/device/common.sh
nvidia-smi --query-gpu=name --format=csv,noheader
run_tests() {  # label timeout pytest-args...
  local label=$1 t=$2; shift 2
  COMET_TEST_DEVICE=cuda timeout $t python -m pytest -q -p no:cacheprovider "$@" > /tmp/t_$label.log 2>&1
  echo "tests $label exit $? ($((SECONDS-T0)) s): $(tail -1 /tmp/t_$label.log)"
}
run_tests moe_equivalence 120 tests/test_moe_equivalence.py
COMET_DEBUG=1 run_tests fused_gpu 240 tests/test_fused_gpu.py
run_tests routing 60 tests/test_routing_kernel.py -k compiled
run_tests wgrad 200 tests/test_wgrad_kernel.py tests/test_grouped_linear.py -k "compiled or gpu"
run_tests init_parity 60 tests/test_init_parity.py
tar czf $OUT/gpu_tests_head.tgz -C /tmp $(cd /tmp && ls t_*.log)
[ $((SECONDS-T0)) -lt 380 ] || exit 0  # the training pair needs ~3 minutes: next call then
OUTDIR=/tmp/cmp ITERS=20 LAYERS=2 EP=1 NPROC=1 TIMEOUT=100 bash examples/compare_2gpu.sh mixtral_8x7b_2gpu.sh \
  > /tmp/cmp.txt 2>&1; echo "compare exit $? ($((SECONDS-T0)) s)"; tail -6 /tmp/cmp.txt
cp /tmp/cmp.txt $OUT/compare_ep1.txt; ls /tmp/cmp
