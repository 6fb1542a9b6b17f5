#!/bin/bash
# Train one example twice from the same seed - Megatron's alltoall MoE layers (COMET=0), then --moe-comet
# (COMET=1) - and compare loss curves and step times (examples/compare_runs.py: summary table, JSON, PNG).
#   bash examples/compare_2gpu.sh [mixtral_8x7b_2gpu.sh|qwen3_30b_a3b_2gpu.sh|qwen2_57b_a14b_2gpu.sh]
#   env: OUTDIR=out/compare  ITERS=100  TIMEOUT=600 (seconds per run)  SEQ=4096  and every train_common.sh knob
#        ORDER="1 0" trains Comet first (default "0 1": Megatron first) - to see whether run order biases step times
#        PROFILE=1: PyTorch-profile iterations PROFILE_START .. PROFILE_END-1 (default 20, 21) on the ranks
#        PROFILE_RANKS (default "0"; e.g. "0 1") of both runs and summarize the traces side by side
#        (benchmarks/trace_summary.py: GPU busy/idle, host syncs, top kernels); OUTDIR must not contain spaces
#        then (Megatron's arguments are passed through EXTRA)
# Exit status: non-zero when a training run or the comparison failed.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
EXAMPLE=${1:-mixtral_8x7b_2gpu.sh}
NAME=${EXAMPLE%.sh}
OUTDIR=${OUTDIR:-out/compare}
mkdir -p "$OUTDIR"
status=0
for COMET in ${ORDER:-0 1}; do
  LABEL=$([ "$COMET" = 1 ] && echo comet || echo megatron)
  RUN_EXTRA=${EXTRA:-}
  if [ "${PROFILE:-0}" = 1 ]; then
    # Megatron writes the traces to <tensorboard-dir>/../torch_profile/rank-<r>.json.gz
    RUN_EXTRA="$RUN_EXTRA --profile --use-pytorch-profiler --profile-ranks ${PROFILE_RANKS:-0}"
    RUN_EXTRA="$RUN_EXTRA --profile-step-start ${PROFILE_START:-20}"
    RUN_EXTRA="$RUN_EXTRA --profile-step-end ${PROFILE_END:-22} --tensorboard-dir $OUTDIR/${NAME}_${LABEL}/tb"
  fi
  COMET=$COMET EXTRA="$RUN_EXTRA" LOG="$OUTDIR/${NAME}_${LABEL}.log" timeout "${TIMEOUT:-600}" bash "$HERE/$EXAMPLE" \
    > /dev/null 2>&1
  rc=$?
  echo "$LABEL: exit $rc ($OUTDIR/${NAME}_${LABEL}.log)"
  [ "$rc" = 0 ] || status=$rc
done
python "$HERE/compare_runs.py" "$OUTDIR/${NAME}_megatron.log" "$OUTDIR/${NAME}_comet.log" --labels megatron comet \
  --seq "${SEQ:-4096}" --json "$OUTDIR/${NAME}_compare.json" --png "$OUTDIR/${NAME}_compare.png" || status=1
if [ "${PROFILE:-0}" = 1 ]; then
  TRACES=() LABELS=()
  for r in ${PROFILE_RANKS:-0}; do
    for LABEL in megatron comet; do
      TRACES+=("$OUTDIR/${NAME}_${LABEL}/torch_profile/rank-$r.json.gz") LABELS+=("${LABEL}_rank$r")
    done
  done
  python "$HERE/../benchmarks/trace_summary.py" "${TRACES[@]}" --labels "${LABELS[@]}" --top "${PROFILE_TOP:-15}" \
    --json "$OUTDIR/${NAME}_traces.json" || status=1
fi
exit $status
