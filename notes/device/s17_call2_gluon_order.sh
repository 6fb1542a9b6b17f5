# Session 17, call 2 (one GPU). Call 1: the fc1 core's main loop alone (EPILOGUE=4, every HGMMA kept) is as slow as
# with its epilogue (Mixtral 3.37 vs 3.32 ms, grouped_mm 3.00), and one n256 wgmma is 7% slower than two n128 -- so
# neither the epilogue nor shared-memory operand bandwidth is the limit. Left: the operand supply from L2 / HBM. A
# Mixtral expert's W1 is 235 MB: with group_m 8 every 8 M-tiles re-stream it from HBM; 16 or 32 M-tiles per group
# halve / quarter that (their A rows, 4-8 MB... 16 MB, stay in L2). And BK 128 with 2 stages halves the barrier
# round trips per FLOP. Prediction: if group_m 16/32 gains >= 3% on Mixtral / Phi / Qwen2-57B, the Triton kernels'
# group_m default follows (KernelConfig.group_m, also in the Triton core timed here as 'triton').
source notes/device/common.sh
V='[{"stages": 4}, {"stages": 4, "group_m": 16}, {"stages": 4, "group_m": 32}, {"stages": 2, "block_k": 128}, {"stages": 4, "group_m": 16, "epilogue": 4}]'
mkdir -p $OUT/m $OUT/f
timeout 200 python benchmarks/probes/gluon_ws_fc1.py --cases mixtral-8x7b --tokens 4096 --rounds 3 --variants "$V" \
  --out $OUT/m > $OUT/probe_mixtral.log 2>&1
echo "probe mixtral exit $? ($((SECONDS-T0)) s)"; grep -v -i warn $OUT/probe_mixtral.log | grep -v errors | tail -4
timeout 330 python benchmarks/probes/gluon_ws_fc1.py --cases phi3.5-moe,qwen2-57b-a14b,dsv3-like,qwen1.5-moe-a2.7b \
  --rounds 3 --variants "$V" --out $OUT/f > $OUT/probe_others.log 2>&1
echo "probe others exit $? ($((SECONDS-T0)) s)"; grep -v -i warn $OUT/probe_others.log | grep -v errors | tail -12
mv $OUT/m/probe_gluon_ws_fc1.json $OUT/probe_mixtral4096.json; mv $OUT/f/probe_gluon_ws_fc1.json $OUT/probe_others.json
rmdir $OUT/m $OUT/f; ls $OUT
