# Sourced by the device scripts from session 16 on (run from the repository root on the device machine, .whl carried):
# the environment every run needs, Megatron-Core installed to /tmp/site, and helpers.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
mkdir -p /tmp/train

# train_run EXAMPLE LABEL [VAR=value ...]: one Comet training run of examples/EXAMPLE with the given environment
# (e.g. LAYERS=2 EP=1 NPROC=1 ITERS=20 COMET_LAYER_TIMING=64), its log at /tmp/train/LABEL.log.
train_run() {
  local example=$1 label=$2; shift 2
  env COMET=1 LOG=/tmp/train/$label.log "$@" timeout "${TRAIN_TIMEOUT:-120}" bash examples/$example > /dev/null 2>&1
  echo "train $label exit $? ($((SECONDS-T0)) s)"
}

# compare_train_runs OUTDIR LABEL...: step times and losses side by side, in-situ layer timing of each run.
compare_train_runs() {
  local out=$1; shift
  python examples/compare_runs.py $(for l in "$@"; do echo /tmp/train/$l.log; done) --labels "$@" --skip 5 \
    --json $out/train_compare.json > $out/train_compare.txt 2>&1; tail -$(($# + 1)) $out/train_compare.txt
  python -m comet_megatron.megatron.layer_timing $(for l in "$@"; do echo /tmp/train/$l.log; done) \
    > $out/layer_timing.txt 2>&1
}
