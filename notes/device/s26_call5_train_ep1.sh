# Session 26, call 5 (one H200): Mixtral's example (2 layers, EP=1, one GPU), Megatron then Comet, 30 iterations: the
# training path with the session 22-24 defaults (256-wide fc2 ⊕ combine and data-gradient tiles), last trained on a
# GPU in session 18 (668.8 / 667.5 ms/step at EP=1). Predicted: losses agree to bf16 noise, Comet 1.12-1.17x.
source notes/device/common.sh
OUTDIR=/tmp/cmp ITERS=30 LAYERS=2 EP=1 NPROC=1 TIMEOUT=200 bash examples/compare_2gpu.sh mixtral_8x7b_2gpu.sh \
  > /tmp/cmp.txt 2>&1; echo "compare exit $? ($((SECONDS-T0)) s)"; tail -8 /tmp/cmp.txt
cp /tmp/cmp.txt $OUT/compare_ep1.txt; cp /tmp/cmp/*.json /tmp/cmp/*.png $OUT/ 2>/dev/null
tar czf $OUT/train_logs.tgz -C /tmp/cmp $(cd /tmp/cmp && ls *.log); ls $OUT
