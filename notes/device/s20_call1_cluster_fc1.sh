# Session 20, call 1 (one GPU, carried Triton 3.9): the fc1 core on 2-CTA clusters sharing the weight tiles by TMA
# multicast (benchmarks/probes/gluon39_ws_fc1_cluster.py) beside the 1-CTA Gluon core, our Triton core and
# torch._grouped_mm. Prediction (next-steps 1f): the 1-CTA core's 10-13% gap to grouped_mm on Mixtral halves with
# multicast; the no-multicast control (same pairs, each CTA loading the weights) shows whether pairing alone moves it.
# A smoke run with a short timeout first: a protocol error shows as a hang, not a wrong number.
source notes/device/common.sh
source notes/device/triton39.sh
P=benchmarks/probes/gluon39_ws_fc1_cluster.py
run39 timeout 120 python $P --cases mixtral-8x7b --tokens 4096 --rounds 1 --iters 3 --warmup 1 \
  --variants '[{"cluster": true}, {"cluster": true, "multicast": false}]' > $OUT/smoke.log 2>&1
rc=$?; echo "smoke exit $rc ($((SECONDS-T0)) s)"; grep -v -i "warn" $OUT/smoke.log | tail -8
[ $rc = 0 ] || exit 1
V='[{"cluster": false}, {"cluster": true}, {"cluster": true, "multicast": false}, {"cluster": true, "group_m": 16}]'
run39 timeout 330 python $P --cases mixtral-8x7b,phi3.5-moe,qwen2-57b-a14b,dsv3-like,qwen1.5-moe-a2.7b --tokens 4096 \
  --rounds 4 --variants "$V" --out $OUT > $OUT/probe.log 2>&1
echo "probe exit $? ($((SECONDS-T0)) s)"; grep -v -i "warn" $OUT/probe.log | grep -v "^  " | tail -20
