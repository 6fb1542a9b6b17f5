# Session 23, call 1 (one GPU, EP=1). How much of the layer benchmark's per-call time is host pacing: the five issue
# cases, Megatron / NCCL+grouped_mm / Comet, each call from an idle GPU (the table's usual timing) and then queued
# back to back (bench_layer --back-to-back: the host runs ahead as in a training step).
# Prediction: Mixtral / Phi / Qwen2-57B within 3% between the modes (GPU-bound); Comet's fine-grained forward much
# shorter back to back (Qwen1.5 2.9 -> ~1.8 ms, DSv3 -3%: its kernels take ~10 ms); Megatron's host-bound expert loop
# shorter too, so Comet's lead over it shrinks on Qwen1.5.
source notes/device/common.sh
for mode in isolated b2b; do
  flag=""; [ $mode = b2b ] && flag="--back-to-back"
  timeout 280 python -m torch.distributed.run --standalone --nproc-per-node=1 benchmarks/bench_layer.py \
    --cases mixtral-8x7b,qwen1.5-moe-a2.7b,qwen2-57b-a14b,phi3.5-moe,dsv3-like \
    --variants megatron,nccl_grouped_mm,comet $flag --out $OUT > $OUT/layer_$mode.log 2>&1
  echo "layer $mode exit $? ($((SECONDS-T0)) s)"
done
for mode in isolated b2b; do echo "== $mode"; grep -v -i warn $OUT/layer_$mode.log | grep -A22 "^case " | head -24; done
