# Session 20, call 3 (one GPU, carried Triton 3.9): call 2's small smoke (20 work items, fewer than the 66 clusters)
# passed for the cluster kernel with and without multicast, the 1-CTA Gluon core failed under 3.9, and the full probe
# (Mixtral first) hung with nothing printed. Here: the 1-CTA failure's message; each cluster variant on a medium
# problem (176 items, several per cluster, 3 launches); then Mixtral alone with progress printed.
source notes/device/common.sh
source notes/device/triton39.sh
P=benchmarks/probes/gluon39_ws_fc1_cluster.py
filt() { grep -v "leaked\|nanobind\|skipped rem\|refleaks\|UserWarning\|warn_once"; }
run39 timeout 45 python $P --smoke '{"cluster": false}' 2>&1 | filt | tail -6; echo "  exit ${PIPESTATUS[0]}"
ok=""
M='{"sizes": [2048, 1920, 1000, 300], "h": 2048, "f": 1024, "launches": 3}'
for v in '{"cluster": true, "multicast": false, "pair_release": false}' '{"cluster": true, "multicast": false}' \
         '{"cluster": true}'; do
  run39 timeout 45 python $P --smoke "$v" --problem "$M" 2>&1 | filt | tail -6
  rc=${PIPESTATUS[0]}; echo "  exit $rc ($((SECONDS-T0)) s)"
  [ $rc = 0 ] && ok="$ok${ok:+, }$v"
done
echo "probe variants: [$ok]"
[ -n "$ok" ] || exit 1
run39 timeout 200 python $P --cases mixtral-8x7b --tokens 4096 --rounds 3 --variants "[$ok]" --out $OUT 2>&1 | filt \
  > $OUT/probe.log
echo "probe exit ${PIPESTATUS[0]} ($((SECONDS-T0)) s)"; tail -12 $OUT/probe.log
