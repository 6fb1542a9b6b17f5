# Session 17, call 5 (nvidia-h200-x2, carry .whl). Call 3 (s16_ep2_call_a) measured Mixtral training at EP=2 at
# 705.3 vs 634.1 ms/step (1.112x, Megatron first); session 14 checked run order both ways. Here:
# 1. the Mixtral pair again, 60 it., Comet first (ORDER="1 0"). Predicted 1.09-1.13x.
# 2. Qwen1.5 at EP=2, session 16's push split (41 / 44) against its old one (35 / 35), interleaved
#    default / old / default / old at the kernel level: call 4's single pair disagreed between the kernel profile
#    (old faster: dispatch_fc1 0.78 vs 1.14 ms, the first variant's kernels also waited on an NCCL all_gather 0.69 ms)
#    and the layer wall (new faster: 5.35 vs 6.25 ms f+b). Predicted: within 5% once interleaved.
source notes/device/common.sh
OUTDIR=/tmp/train ITERS=60 TIMEOUT=170 ORDER="1 0" bash examples/compare_2gpu.sh mixtral_8x7b_2gpu.sh | tail -4
echo "mixtral pair done ($((SECONDS-T0)) s)"
cp /tmp/train/mixtral_8x7b_2gpu_compare.json $OUT/mixtral_comet_first_compare.json
cp /tmp/train/mixtral_8x7b_2gpu_compare.png $OUT/mixtral_comet_first_compare.png
tar czf $OUT/train_logs.tgz -C /tmp/train --exclude='*.png' --exclude='*.json' . 2>/dev/null
OLD='{"comm_programs":35,"dgrad_comm_programs":35}'
timeout 150 python -m torch.distributed.run --standalone --nproc-per-node=2 benchmarks/bench_layer.py \
  --cases qwen1.5-moe-a2.7b --variants comet --comet-configs "[$OLD, {}, $OLD, {}]" \
  --profile-kernels 5 --out $OUT/split > $OUT/split_ep2.log 2>&1
echo "split exit $? ($((SECONDS-T0)) s)"
grep -v -i warn $OUT/split_ep2.log | grep -E "kernels, ms per|dispatch_fc1_kernel|dispatch_dgrad_kernel|AllGather|combine_reduce" | cut -c1-100
grep -v -i warn $OUT/split_ep2.log | grep -A8 "^case " | head -10
mv $OUT/split/bench_layer_ep2.json $OUT/split_ep2.json; rm -rf $OUT/split; ls $OUT
