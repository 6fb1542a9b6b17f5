# Session 14, call 6 (nvidia-h200-x2, carry .whl): where Mixtral's training step goes at EP=2 with the current code
# (issue 6: 1.06x measured in calls 4-5, target 1.10x). COMET_LAYER_TIMING=64 on both runs (in-situ MoE layer / router /
# experts / fused phases, GPU and host ms per call), 40 it. Last in-situ EP=2 numbers: session 5 (Megatron's layer
# 7.2 fwd / 14.0 bwd, Comet's 7.5 / 13.9; fwd.plan host 0.7-1.0 ms, fwd.reduce 1.2, bwd.reduce 2.2).
# Predicted: Comet's layer below Megatron's in both directions now; fwd.plan host ~0.2 ms (s7 at EP=1: 1.01 -> 0.18);
# the reduces still carry the routing imbalance's wait.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
mkdir -p $OUT/train
for run in megatron:0 comet:1; do
  name=${run%%:*}; comet=${run#*:}
  COMET=$comet COMET_LAYER_TIMING=64 ITERS=40 LOG=$OUT/train/mixtral_ep2_timing_$name.log \
    timeout 120 bash examples/mixtral_8x7b_2gpu.sh > /dev/null 2>&1
  echo "mixtral EP=2 $name exit $? ($((SECONDS-T0)) s)"
done
python examples/compare_runs.py $OUT/train/mixtral_ep2_timing_megatron.log $OUT/train/mixtral_ep2_timing_comet.log \
  --labels megatron comet --seq 4096 --json $OUT/train_compare.json | tail -3
python -m comet_megatron.megatron.layer_timing $OUT/train/mixtral_ep2_timing_*.log --json $OUT/layer_timing.json \
  > $OUT/layer_timing.txt 2>&1
grep -v -i warn $OUT/layer_timing.txt | head -60
tar czf $OUT/train.tgz -C $OUT train && rm -rf $OUT/train
ls $OUT
