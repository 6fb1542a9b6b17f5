# Session 23, prepared for nvidia-h200-x2 (carry .whl): issue 4's five-case table at EP=2 with the current code (the
# last one is session 17's), Megatron / NCCL+grouped_mm / Comet, each call from an idle GPU (the issue's history), then
# the same queued back to back (bench_layer --back-to-back, what a training step sees). ~550 s.
# Predicted (from s17 and s23's EP=1 pair): isolated within noise of s17 (x-floor fwd Mixtral 1.53, Phi 1.82,
# Qwen2-57B 1.80, Qwen1.5 4.30, DSv3 2.40) except DSv3 a few % better (expert-major M-tiles, s22); back to back
# Qwen1.5 ~2.7 and Phi ~1.6, the others within 5% of their isolated numbers; Comet fastest in both modes.
source notes/device/common.sh
# the isolated run also times Comet with 2-byte peer stores (comet_cfg0): the 16-byte ones (KernelConfig.
# aligned_peer_stores, s23) were measured on one GPU only, where Phi-3.5's fc1 data-gradient lost ~11% with a
# simulated peer and gained 13% without one; NVLink's writes decide here
for mode in isolated b2b; do
  flags=(--comet-configs '[{"aligned_peer_stores": false}]'); [ $mode = b2b ] && flags=(--back-to-back)
  timeout 290 python -m torch.distributed.run --standalone --nproc-per-node=2 benchmarks/bench_layer.py \
    --cases mixtral-8x7b,qwen1.5-moe-a2.7b,qwen2-57b-a14b,phi3.5-moe,dsv3-like \
    --variants megatron,nccl_grouped_mm,comet "${flags[@]}" --out $OUT > $OUT/layer_ep2_$mode.log 2>&1
  echo "layer $mode exit $? ($((SECONDS-T0)) s)"
done
for mode in isolated b2b; do echo "== $mode"; grep -v -i warn $OUT/layer_ep2_$mode.log | grep -A28 "^case " | head -30; done
