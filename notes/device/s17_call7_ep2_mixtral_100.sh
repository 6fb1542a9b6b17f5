# Session 17, call 7 (nvidia-h200-x2, carry .whl): issue 6's check as written -- 100 iterations of the 2-GPU Mixtral
# example from the same seed, Megatron's alltoall dispatcher then Comet, with the code of this session (calls 3 and 5:
# 60 iterations, 1.112x Megatron first, 1.109x Comet first). Predicted 1.10-1.12x; iteration-1 loss equal to ~6e-6.
source notes/device/common.sh
OUTDIR=/tmp/train ITERS=100 TIMEOUT=150 bash examples/compare_2gpu.sh mixtral_8x7b_2gpu.sh | tail -4
echo "mixtral pair done ($((SECONDS-T0)) s)"
cp /tmp/train/mixtral_8x7b_2gpu_compare.json /tmp/train/mixtral_8x7b_2gpu_compare.png $OUT/
cp /tmp/train/mixtral_8x7b_2gpu_megatron.log /tmp/train/mixtral_8x7b_2gpu_comet.log $OUT/; ls $OUT
