# Session 16, prepared for nvidia-h200-x2 (carry .whl): the training pairs at EP=2 with sessions 15-16's changes
# (backward's probability gradients pushed with the fc1 data-gradient rows instead of an all_to_all; layer0 queued
# before the counts read; the weight-gradient kernel's main_grad prefetch, which Mixtral does not use).
# 1. Mixtral pair, 60 it., Megatron then Comet (issue 6: 1.061x in session 14, target 1.10x).
#    Predicted: 1.08-1.10x (s14's in-situ: the probability all_to_all held rank 0 for 3.8 ms per call, the early launch
#    saved ~0.8 ms per forward call at EP=1; part of the wait moves to the next reduce).
# 2. Comet alone with COMET_LAYER_TIMING=64, 30 it.: where the imbalance wait went (bwd.reduce / fwd.counts_all_gather),
#    how often early_launch is 1 at EP=2, the MoE layer's ms per call against s14's 7.03 / 13.78.
# 3. Qwen3-30B-A3B pair, 40 it. (s14: 3.55x).
source notes/device/common.sh
nvidia-smi -L
OUTDIR=/tmp/train ITERS=60 TIMEOUT=170 bash examples/compare_2gpu.sh mixtral_8x7b_2gpu.sh | tail -4
echo "mixtral pair done ($((SECONDS-T0)) s)"
TRAIN_TIMEOUT=110 train_run mixtral_8x7b_2gpu.sh mixtral_ep2_timing_comet COMET_LAYER_TIMING=64 ITERS=30
python -m comet_megatron.megatron.layer_timing /tmp/train/mixtral_ep2_timing_comet.log > $OUT/layer_timing.txt 2>&1
grep -E " moe | fused | experts " $OUT/layer_timing.txt | grep -v Warn
OUTDIR=/tmp/train ITERS=40 TIMEOUT=150 bash examples/compare_2gpu.sh qwen3_30b_a3b_2gpu.sh | tail -4
echo "qwen3 pair done ($((SECONDS-T0)) s)"
cp /tmp/train/*_compare.json /tmp/train/*_compare.png $OUT/ 2>/dev/null
tar czf $OUT/train_logs.tgz -C /tmp/train --exclude='*.png' --exclude='*.json' . 2>/dev/null
ls $OUT
