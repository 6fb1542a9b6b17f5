# Session 26, call 1 (one H200): hardware counters for the two open "why" questions, with Nsight Compute.
# (a) DSv3-like's accumulating weight-gradient kernel takes 10.8-11.5 ms against rmw 7.1 / gemm 4.3 at 1980 MHz and
#     ~650 W (s25): not the power cap. Hypothesis: L2 bandwidth (~32 GB of operand re-reads at 128x128 tiles with
#     K = 272 beside the 30 GB read-modify-write). Predicted: lts throughput >= 80% of peak, DRAM < 70%.
# (b) dispatch ⊕ fc1's GEMM programs trail torch._grouped_mm by 6% on Mixtral (5.94 vs 5.59 ms, s24) and Gluon / tile /
#     multicast variants never closed it (s13-s20). Predicted: tensor-pipe utilisation lower for ours with stalls on
#     the wgmma wait, not on memory.
source notes/device/common.sh
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
which ncu && ncu --version | tail -1
SECTIONS="--section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section Occupancy --section LaunchStats --section WarpStateStats --section SchedulerStats"
for t in wgrad:dsv3-like gm_wgrad:dsv3-like rmw:dsv3-like fc1:mixtral-8x7b gm_fc1:mixtral-8x7b fc1:dsv3-like gm_fc1:dsv3-like; do
  name=${t//:/_}
  timeout 150 ncu --nvtx --nvtx-include "ncu/" --clock-control none $SECTIONS \
    --metrics lts__t_bytes.sum,dram__bytes_read.sum,dram__bytes_write.sum,gpu__time_duration.sum \
    python benchmarks/probes/ncu_targets.py $t > /tmp/ncu_$name.txt 2>&1
  echo "ncu $t exit $? ($((SECONDS-T0)) s)"
done
ncu --query-metrics 2>/dev/null | grep -i -E "gmma|tensor_op|pipe_tensor" | head -20 > /tmp/ncu_tensor_metrics.txt
for t in fc1:mixtral-8x7b gm_fc1:mixtral-8x7b; do
  name=${t//:/_}
  M=$(awk '{print $1}' /tmp/ncu_tensor_metrics.txt | sed 's/$/.avg.pct_of_peak_sustained_active/' | paste -sd, -)
  [ -n "$M" ] && timeout 100 ncu --nvtx --nvtx-include "ncu/" --clock-control none --metrics "$M" \
    python benchmarks/probes/ncu_targets.py $t > /tmp/ncu_tensor_$name.txt 2>&1; echo "ncu tensor $t exit $?"
done
tar czf $OUT/ncu_s26_call1.tgz -C /tmp $(cd /tmp && ls ncu_*.txt)
# the short table: duration, SOL %, L2 / DRAM bytes of each profiled launch
for f in /tmp/ncu_*_*.txt; do
  case $f in *tensor*) continue;; esac
  echo "== $(basename $f .txt)"
  grep -E "^\s+(Duration|Compute \(SM\) Throughput|Memory Throughput|L2 Cache Throughput|DRAM Throughput|L1/TEX Hit Rate|L2 Hit Rate|Achieved Occupancy|Registers Per Thread|Dynamic Shared Memory Per Block|lts__t_bytes.sum|dram__bytes_read.sum|dram__bytes_write.sum|Issue Slots Busy|No Eligible|Warp Cycles Per Issued Instruction)\b" $f | sed 's/  */ /g' | head -20
done
grep -h -E "pct_of_peak" /tmp/ncu_tensor_*.txt | sed 's/  */ /g' | head -20
