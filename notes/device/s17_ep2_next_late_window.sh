# Prepared in session 17 for the next nvidia-h200-x2 session (carry .whl; ~320 s): why the Mixtral ratio falls over a
# run. Session 17's 100-iteration pair: 678.5 vs 632.4 ms/step (1.073x); iterations 6-60 1.089x, 61-100 1.068x;
# Megatron's 10-iteration medians 775 -> 660, Comet's 662 -> 615. Here both runs with COMET_LAYER_TIMING=64 (a report
# per 64 calls of a kind = 4 iterations of 16 MoE calls), summarized over reports 3-15 (iterations ~9-60) and 16-25
# (~61-100): which part of each layer (router, dispatch, experts; Comet's fused phases) shortens, and whether the
# rows per rank / busiest rank move (routing balance). Predicted: Megatron's MoE layer shortens by ~3-4 ms per call
# between the windows (its all_to_all waits shrink as the routing balances), Comet's by ~1-2 ms (its reduces carry
# the same wait, its GEMMs do not change).
source notes/device/common.sh
TRAIN_TIMEOUT=170 train_run mixtral_8x7b_2gpu.sh megatron COMET=0 COMET_LAYER_TIMING=64 ITERS=100
TRAIN_TIMEOUT=170 train_run mixtral_8x7b_2gpu.sh comet COMET_LAYER_TIMING=64 ITERS=100
python examples/compare_runs.py /tmp/train/megatron.log /tmp/train/comet.log --labels megatron comet --skip 5 \
  --json $OUT/train_compare.json | tail -3
for w in "2 15 early" "15 25 late"; do set -- $w
  python -m comet_megatron.megatron.layer_timing /tmp/train/megatron.log /tmp/train/comet.log --skip-reports $1 \
    --last-report $2 --json $OUT/layer_timing_$3.json > $OUT/layer_timing_$3.txt 2>&1
  echo "== $3 (reports $(($1 + 1))-$2)"; grep -E " (moe|router|dispatch) " $OUT/layer_timing_$3.txt
  grep -E "rows|fwd.reduce|bwd.dispatch_dgrad" $OUT/layer_timing_$3.txt
done
tar czf $OUT/train_logs.tgz -C /tmp/train megatron.log comet.log; ls $OUT
