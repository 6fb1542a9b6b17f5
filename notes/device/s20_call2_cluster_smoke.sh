# Session 20, call 2 (one GPU, carried Triton 3.9): call 1's smoke run of the 2-CTA fc1 core timed out at 120 s with
# no output. Isolate it: each variant alone on a small problem (--smoke, progress printed, 45 s each): the 1-CTA Gluon
# core under 3.9; the cluster kernel without multicast and without the cross-CTA release (two independent CTAs of a
# cluster); + the release; + multicast. Then the full probe with the variants that finished.
source notes/device/common.sh
source notes/device/triton39.sh
P=benchmarks/probes/gluon39_ws_fc1_cluster.py
ok='{"cluster": false}'
for v in '{"cluster": false}' '{"cluster": true, "multicast": false, "pair_release": false}' \
         '{"cluster": true, "multicast": false}' '{"cluster": true}'; do
  run39 timeout 45 python $P --smoke "$v" 2>&1 | grep -v -i warn | tail -4
  rc=${PIPESTATUS[0]}; echo "  exit $rc ($((SECONDS-T0)) s)"
  [ $rc = 0 ] && [ "$v" != '{"cluster": false}' ] && ok="$ok, $v"
done
echo "full probe variants: [$ok]"
run39 timeout 300 python $P --cases mixtral-8x7b,phi3.5-moe,qwen2-57b-a14b,dsv3-like,qwen1.5-moe-a2.7b --tokens 4096 \
  --rounds 4 --variants "[$ok]" --out $OUT > $OUT/probe.log 2>&1
echo "probe exit $? ($((SECONDS-T0)) s)"; grep -v -i "warn" $OUT/probe.log | grep -v "^  " | tail -20
