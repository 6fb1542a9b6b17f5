#!/usr/bin/env bash
# The one command line for the GPU machine, run from the repository root:
#   bash benchmarks/run_device.sh [bench_layer.py arguments, e.g. --cases mixtral-8x7b --fwd-only]
# Needs the megatron-core wheel in .whl/ (git-ignored: carry it, e.g. run(..., carry=[".whl"])).
# Installs it into /tmp/site, turns NVLink multicast off (it can take the shared host down), runs
# benchmarks/bench_layer.py on every GPU of the host (EP = number of GPUs) and writes results + log to $OUT.
set -euo pipefail

OUT="${OUT:-$PWD/benchmarks/results}"
mkdir -p "$OUT"
PY="${PYTHON:-$(command -v python3 || command -v python)}"

"$PY" -m pip install --quiet --no-deps --no-index --upgrade --target /tmp/site .whl/megatron_core-*.whl

export NCCL_NVLS_ENABLE=0
export TORCH_SYMM_MEM_DISABLE_MULTICAST=1
export NVSHMEM_DISABLE_NVLS=1
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
# symm_vdev2d keeps ~3 GiB of symmetric buffers for the largest default cases; NVSHMEM's default heap is 1 GiB.
export NVSHMEM_SYMMETRIC_SIZE="${NVSHMEM_SYMMETRIC_SIZE:-8G}"

nvidia-smi -L
NGPU="$(nvidia-smi -L | wc -l)"
suffix=""
for arg in "$@"; do [ "$arg" = --back-to-back ] && suffix=_b2b; done  # the name bench_layer.py gives its results
"$PY" -m torch.distributed.run --standalone --nproc-per-node="$NGPU" \
    benchmarks/bench_layer.py "$@" --out "$OUT" 2>&1 | tee "$OUT/bench_layer_ep${NGPU}${suffix}.log"
