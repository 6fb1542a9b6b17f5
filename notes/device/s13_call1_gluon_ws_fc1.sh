# Session 13, call 1 (one GPU). Our fc1 core is 11-13% behind cuBLAS (bench_gemm_core Mixtral 4096 tok, EP=2 simulated:
# fc1 ~2.97-3.3 ms vs bare grouped_mm ~2.6-2.7) and Triton 3.6 has no warp specialization for sm_90, so the software
# pipeline drains at every tile boundary (epilogue, then the next tile's prologue loads). Gluon (Triton 3.6's
# experimental layer) has warp_specialize on Hopper. Probe: benchmarks/probes/gluon_ws_fc1.py, one loader warp (TMA)
# + two consumer warpgroups (wgmma 128x(128 gate + 128 linear), SwiGLU*prob epilogue, preact saved), static tile order
# = the plan's grouped order; local sm_90 compile: 229 KB smem with 4 stages, 168 regs (240 after setmaxnreg), no spills.
# Prediction: at or below grouped_mm's time on Mixtral/Phi/Qwen2-57B fc1 (>= 8% faster than our Triton core); act and
# preact bit-identical to the Triton kernel's (same wgmma shapes and K order) or within its error to the reference.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
mkdir -p $OUT/m $OUT/f
V='[{"stages": 4}, {"stages": 3}, {"stages": 4, "group_m": 1}]'
timeout 150 python benchmarks/probes/gluon_ws_fc1.py --cases mixtral-8x7b --tokens 4096 --variants "$V" --out $OUT/m \
  > $OUT/probe_mixtral.log 2>&1
echo "probe mixtral exit $? ($((SECONDS-T0)) s)"; grep -v -i warn $OUT/probe_mixtral.log | tail -12
timeout 300 python benchmarks/probes/gluon_ws_fc1.py --cases phi3.5-moe,qwen2-57b-a14b,dsv3-like,qwen1.5-moe-a2.7b \
  --variants "$V" --out $OUT/f > $OUT/probe_fine.log 2>&1
echo "probe others exit $? ($((SECONDS-T0)) s)"; grep -v -i warn $OUT/probe_fine.log | tail -20
mv $OUT/m/probe_gluon_ws_fc1.json $OUT/probe_mixtral4096.json; mv $OUT/f/probe_gluon_ws_fc1.json $OUT/probe_others.json
rmdir $OUT/m $OUT/f; ls $OUT
