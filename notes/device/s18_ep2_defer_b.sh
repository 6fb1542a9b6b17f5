# Session 18, prepared for nvidia-h200-x2 (carry .whl; ~450 s), after s18_ep2_defer_a.sh: the other deferral variants
# at 100 iterations (WGRAD_DEFER=1 without carrying; WGRAD_DEFER=2 with), then 30 iterations of WGRAD_DEFER=1
# WGRAD_CARRY=1 with COMET_LAYER_TIMING=64: how much of the carried work runs in the forward's waits
# (fwd.carried_wgrad) and what is left of fwd.reduce / bwd.dispatch_dgrad per rank. Predicted (timing model): defer1
# ~-0.56 ms per call vs defer0, defer2 + carry within 0.1 ms per call of defer1 + carry; fwd.reduce on the lighter rank
# drops by about the carried work it runs.
source notes/device/common.sh
TRAIN_TIMEOUT=170 train_run mixtral_8x7b_2gpu.sh defer1 WGRAD_DEFER=1 ITERS=100
TRAIN_TIMEOUT=170 train_run mixtral_8x7b_2gpu.sh carry2 WGRAD_DEFER=2 WGRAD_CARRY=1 ITERS=100
python examples/compare_runs.py /tmp/train/defer1.log /tmp/train/carry2.log --labels defer1 carry2 --skip 5 \
  --json $OUT/train_compare.json | tail -3
python notes/device/s18_windows.py defer1 carry2
TRAIN_TIMEOUT=120 train_run mixtral_8x7b_2gpu.sh carry1_timing WGRAD_DEFER=1 WGRAD_CARRY=1 ITERS=30 COMET_LAYER_TIMING=64
python -m comet_megatron.megatron.layer_timing /tmp/train/carry1_timing.log > $OUT/layer_timing.txt 2>&1
grep -E "fused|moe " $OUT/layer_timing.txt | grep -v -i warn
tar czf $OUT/train_logs.tgz -C /tmp/train defer1.log carry2.log carry1_timing.log; ls $OUT
