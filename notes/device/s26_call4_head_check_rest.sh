# Session 26, call 4 (one H200): call 3's two test files that its timeouts cut (fused GPU tests: 30 of 33 EP=1 cases had
# passed at 240 s; init parity: 60 s was too short for its spawned ranks), with room this time.
source notes/device/common.sh
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 360 python -m pytest -q -p no:cacheprovider tests/test_fused_gpu.py \
  > /tmp/t_fused_gpu.log 2>&1; echo "fused_gpu exit $? ($((SECONDS-T0)) s): $(tail -1 /tmp/t_fused_gpu.log)"
COMET_TEST_DEVICE=cuda timeout 200 python -m pytest -q -p no:cacheprovider tests/test_init_parity.py \
  > /tmp/t_init_parity.log 2>&1; echo "init_parity exit $? ($((SECONDS-T0)) s): $(tail -1 /tmp/t_init_parity.log)"
tar czf $OUT/gpu_tests_head_rest.tgz -C /tmp t_fused_gpu.log t_init_parity.log
