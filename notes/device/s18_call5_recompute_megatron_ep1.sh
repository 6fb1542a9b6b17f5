# Session 18, call 5 (one GPU, carry .whl): Megatron's own layer with the settings of call 4 (Mixtral shapes, 4 layers,
# MOE_FREQ=2, RECOMPUTE=1, EP=1, 15 it.), to compare call 4's Comet runs (MoE recompute works again after the grad-mode
# fix) with Megatron's loss. Predicted: iteration-1 loss within 1e-4 relative, curves within bf16 drift (< 5e-2 over
# 15 iterations), Comet faster.
source notes/device/common.sh
TRAIN_TIMEOUT=160 train_run mixtral_8x7b_2gpu.sh megatron COMET=0 LAYERS=4 MOE_FREQ=2 RECOMPUTE=1 EP=1 NPROC=1 ITERS=15
tar xzf benchmarks/results/s18/call4_recompute_carry_ep1/train_logs.tgz -C /tmp/train
python examples/compare_runs.py /tmp/train/megatron.log /tmp/train/defer0.log /tmp/train/carry1.log \
  --labels megatron comet comet_carry --skip 5 --json $OUT/train_compare.json --png $OUT/recompute_compare.png | tail -4
tar czf $OUT/train_logs.tgz -C /tmp/train megatron.log; ls $OUT
