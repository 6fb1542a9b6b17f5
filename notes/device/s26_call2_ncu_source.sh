# Session 26, call 2 (one H200). Call 1 refuted the L2 hypothesis for DSv3-like's accumulating weight-gradient kernel:
# 10.68 ms, DRAM 16.8 GB read + 15.0 GB written (62% of peak, 2.97 TB/s; the read-modify-write alone reaches 87.5%),
# L2 throughput 52%, tensor pipe 21%, 2 programs of 4 warps per SM (registers and shared memory both allow 2), 0.16
# eligible warps per scheduler, 66% of stalls "L1TEX scoreboard". Which instructions stall? The per-SASS stall
# samples say (source page). Prediction: the masked tail chunk's cp.async pointer loads and the row_start loads at
# the program's start, not the TMA loop.
# Also fc1 on Mixtral: ours 80.8% tensor pipe vs CUTLASS 93.4%, stalls "CTA barrier" 36%: which barriers?
source notes/device/common.sh
for t in wgrad:dsv3-like fc1:mixtral-8x7b; do
  name=${t//:/_}
  timeout 200 ncu --nvtx --nvtx-include "ncu/" --clock-control none --section WarpStateStats --section SourceCounters \
    --import-source no -o /tmp/src_$name python benchmarks/probes/ncu_targets.py $t > /tmp/src_$name.log 2>&1
  echo "ncu $t exit $? ($((SECONDS-T0)) s)"
  ncu -i /tmp/src_$name.ncu-rep --page source --csv --print-source sass > /tmp/src_${name}_sass.csv 2>/tmp/src_${name}_err.txt
  echo "source page exit $? lines $(wc -l < /tmp/src_${name}_sass.csv)"; head -c 600 /tmp/src_${name}_err.txt
  ncu -i /tmp/src_$name.ncu-rep --page details --print-details all > /tmp/src_${name}_details.txt 2>&1
done
tar czf $OUT/ncu_s26_call2.tgz -C /tmp $(cd /tmp && ls src_*.csv src_*.log src_*details.txt src_*err.txt)
for n in wgrad_dsv3-like fc1_mixtral-8x7b; do
  echo "== $n: header"; head -2 /tmp/src_${n}_sass.csv | cut -c1-400
done
