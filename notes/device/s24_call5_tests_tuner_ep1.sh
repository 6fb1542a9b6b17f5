# Session 24, call 5 (one GPU, EP=1). GPU tests at EP=1 with the 256-wide data-gradient on every shape (the tests'
# small ffn got 128 before). Phi-3.5's fc1 data-gradient with 16-byte vs 2-byte peer stores again, now that its tiles
# are 256 wide (s23: +11-14% with them at EP=2 simulated). Then the tuner's candidates in situ (bench_layer --tune,
# fwd+bwd) on Phi-3.5, Qwen2-57B and Qwen1.5 at EP=1: does any other default still lose to a candidate?
# Prediction: tests pass; Phi's on/off within noise now; the defaults within 3% of the best candidate.
source notes/device/common.sh
nvidia-smi --query-gpu=name --format=csv,noheader
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 280 python -m pytest -q -p no:cacheprovider tests/test_fused_gpu.py \
  -m gpu -k ep1 > $OUT/gpu_tests_ep1.log 2>&1
echo "GPU tests exit $? ($((SECONDS-T0)) s)"; grep -E "passed|failed|FAIL|Error" $OUT/gpu_tests_ep1.log | tail -4
C='[{}, {"aligned_peer_stores": false}, {}, {"aligned_peer_stores": false}, {}, {"aligned_peer_stores": false}]'
timeout 100 python benchmarks/bench_gemm_core.py --case phi3.5-moe --ep 2 --configs "$C" --iters 15 --out /tmp/core \
  > /tmp/core_phi.log 2>&1
echo "phi aligned exit $? ($((SECONDS-T0)) s) exact: $(grep exact /tmp/core_phi.log | grep -c True)"
cp /tmp/core/bench_gemm_core_phi3.5-moe.json $OUT/core_phi_aligned.json
python - <<'PY'
import json, os
d = json.load(open(os.environ["OUT"] + "/core_phi_aligned.json"))
for c in d["configs"]:
    print(f"aligned {str(c['config']['aligned_peer_stores']):5} " + " ".join(f"{k} {v:.3f}" for k, v in c["ms"].items()))
PY
export COMET_TUNING_CACHE=$OUT/tuning.json
for case in phi3.5-moe qwen2-57b-a14b qwen1.5-moe-a2.7b; do
  timeout 110 python -m torch.distributed.run --standalone --nproc-per-node=1 benchmarks/bench_layer.py \
    --cases $case --variants comet --tune --iters 10 --out /tmp/tune_$case > $OUT/tune_$case.log 2>&1
  echo "tune $case exit $? ($((SECONDS-T0)) s)"
  grep -v -i warn $OUT/tune_$case.log | grep -E "comet|tun|stored" | tail -15
  cp /tmp/tune_$case/bench_layer_ep1.json $OUT/tune_$case.json
done
cd $OUT && tar czf tune.tgz tune_*.json tune_*.log && rm -f tune_*.json tune_*.log; ls $OUT
