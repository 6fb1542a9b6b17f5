# Session 20, call 4 (one GPU, carried Triton 3.9). Call 3: the multicast cluster kernel is exact (medium smoke, and
# bit-identical to the Triton core on Mixtral) but slower than it (3.663 vs 3.402 ms; grouped_mm 2.951). The controls
# had failed: gluon_ws_fc1's 1-CTA kernel does not compile under 3.9, and "no multicast + the pair release" hung
# (CTA 1 can run a phase ahead and complete CTA 0's count-2 barrier alone: now refused). Controls now from the same
# kernel: ctas=1 (single CTAs, one M-tile per item) and ctas=2 without multicast (independent CTAs in clusters).
# All five cases, 3 interleaved rounds. Prediction: ctas=1 within 3% of the Triton core (s13: Gluon 0.93-1.01x).
source notes/device/common.sh
source notes/device/triton39.sh
P=benchmarks/probes/gluon39_ws_fc1_cluster.py
filt() { grep -v "leaked\|nanobind\|skipped rem\|refleaks\|UserWarning\|warn_once"; }
M='{"sizes": [2048, 1920, 1000, 300], "h": 2048, "f": 1024, "launches": 2}'
for v in '{"ctas": 1}' '{"ctas": 2, "multicast": false}'; do
  run39 timeout 45 python $P --smoke "$v" --problem "$M" 2>&1 | filt | tail -2; echo "  exit ${PIPESTATUS[0]}"
done
V='[{"ctas": 1}, {"ctas": 2, "multicast": false}, {"ctas": 2}, {"ctas": 2, "group_m": 16}]'
run39 timeout 330 python $P --cases mixtral-8x7b,phi3.5-moe,qwen2-57b-a14b,dsv3-like,qwen1.5-moe-a2.7b --tokens 4096 \
  --rounds 3 --variants "$V" --out $OUT 2>&1 | filt > $OUT/probe.log
echo "probe exit ${PIPESTATUS[0]} ($((SECONDS-T0)) s)"; grep -v "^[a-z0-9.-]*: " $OUT/probe.log | tail -24
