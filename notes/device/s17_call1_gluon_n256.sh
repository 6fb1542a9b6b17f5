# Session 17, call 1 (one GPU). The fc1 core's two n128 accumulators (gate, linear) read the A tile from shared memory
# twice: per SM ~96 B/clk of wgmma operand reads + ~48 B/clk of TMA fills against ~128 B/clk of shared-memory bandwidth
# at the full tensor rate; one m64n256 wgmma over a [gate | linear] B tile reads ~80. Probe (benchmarks/probes/
# gluon_ws_fc1.py, FUSED_B): the B tile as two TMA boxes into one [256, 64] buffer, one n256 wgmma per stage, the
# accumulator split into gate / linear halves in registers (local sm_90 compile, Triton 3.6: 197 KB, 4 wgmma per k-step
# pair -> m64n256k16, no spills). EPILOGUE=4 stores one element per half-tile: a valid main-loop bound (every HGMMA
# kept), which s13's EPILOGUE=0 was not.
# Prediction: fused n256 >= 5% faster than n128 x 2 on Mixtral / Phi / Qwen2-57B, at or below grouped_mm; the n128
# bound within 5% of grouped_mm; act and preact bit-identical to the Triton kernel's.
source notes/device/common.sh
V='[{"stages": 4}, {"stages": 4, "epilogue": 4}, {"stages": 4, "fused_b": true}, {"stages": 4, "fused_b": true, "epilogue": 4}]'
mkdir -p $OUT/m $OUT/f
timeout 200 python benchmarks/probes/gluon_ws_fc1.py --cases mixtral-8x7b --tokens 4096 --rounds 3 --variants "$V" \
  --out $OUT/m > $OUT/probe_mixtral.log 2>&1
echo "probe mixtral exit $? ($((SECONDS-T0)) s)"; grep -v -i warn $OUT/probe_mixtral.log | tail -8
timeout 330 python benchmarks/probes/gluon_ws_fc1.py --cases phi3.5-moe,qwen2-57b-a14b,dsv3-like,qwen1.5-moe-a2.7b \
  --rounds 3 --variants "$V" --out $OUT/f > $OUT/probe_others.log 2>&1
echo "probe others exit $? ($((SECONDS-T0)) s)"; grep -v -i warn $OUT/probe_others.log | tail -24
mv $OUT/m/probe_gluon_ws_fc1.json $OUT/probe_mixtral4096.json; mv $OUT/f/probe_gluon_ws_fc1.json $OUT/probe_others.json
rmdir $OUT/m $OUT/f; ls $OUT
