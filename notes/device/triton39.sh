# Sourced after common.sh by the session-19 device scripts: unpacks the slimmed Triton 3.9 carried in .t39/
# (notes/next-steps.md §1f) to /tmp/t39 and defines run39 CMD..., which runs CMD with it instead of the image's 3.6
# (in-tree backend discovery; the image's 3.6 ptxas-blackwell compiles 3.9's PTX).
T36=$(cd /tmp && PYTHONPATH= python -c "import triton, os; print(os.path.dirname(triton.__file__))")
mkdir -p /tmp/t39 && tar -xJf .t39/rest.tar.xz -C /tmp/t39 && xz -dc .t39/libtriton.so.xz > /tmp/t39/triton/_C/libtriton.so
chmod +x /tmp/t39/triton/_C/libtriton.so
run39() { env PYTHONPATH=/tmp/t39:/tmp/site:$PWD TRITON_BACKENDS_IN_TREE=1 TRITON_DEFAULT_FP_FUSION=1 \
  TRITON_PTXAS_BLACKWELL_PATH=$T36/backends/nvidia/bin/ptxas-blackwell "$@"; }
