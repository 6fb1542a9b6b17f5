# Session 17, call 6 (nvidia-h200-x2, carry .whl): the tuner at EP=2 with this session's candidates (the current
# choice, then both dispatch kernels' push counts x 0.5 / 1 / 1.5 x three fc1 tile / depth pairs), on Mixtral at the
# training shape (4096 tokens per rank) and Qwen1.5 (8192); then Mixtral training with that cache (Comet, 40 it.).
# Predicted: Mixtral's default kept or a candidate within 2%; the training step within noise of calls 3 / 5 (633-634 ms).
source notes/device/common.sh
export COMET_TUNING_CACHE=$OUT/tuning.json
timeout 200 python -m torch.distributed.run --standalone --nproc-per-node=2 benchmarks/bench_layer.py \
  --cases mixtral-8x7b --tokens 4096 --variants comet --tune --out $OUT/m > $OUT/tune_mixtral.log 2>&1
echo "tune mixtral exit $? ($((SECONDS-T0)) s)"
timeout 150 python -m torch.distributed.run --standalone --nproc-per-node=2 benchmarks/bench_layer.py \
  --cases qwen1.5-moe-a2.7b --variants comet --tune --out $OUT/q > $OUT/tune_qwen15.log 2>&1
echo "tune qwen1.5 exit $? ($((SECONDS-T0)) s)"
for f in $OUT/tune_mixtral.log $OUT/tune_qwen15.log; do grep -v -i warn $f | grep -E "comet|tun|stored" | tail -14; done
mv $OUT/m/bench_layer_ep2.json $OUT/tune_mixtral_ep2.json; mv $OUT/q/bench_layer_ep2.json $OUT/tune_qwen15_ep2.json
rm -rf $OUT/m $OUT/q
TRAIN_TIMEOUT=140 train_run mixtral_8x7b_2gpu.sh mixtral_tuned_comet ITERS=40
grep -E "elapsed time per iteration" /tmp/train/mixtral_tuned_comet.log | tail -3 | cut -c1-160
python examples/compare_runs.py /tmp/train/mixtral_tuned_comet.log --labels tuned --skip 5 2>&1 | tail -2
cp /tmp/train/mixtral_tuned_comet.log $OUT/; ls $OUT
