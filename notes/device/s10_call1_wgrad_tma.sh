# Session 10, call 1 (nvidia-h200; no 2-GPU machine lent again). The weight-gradient kernel reads the expert's whole
# row chunks with TMA descriptors (only the last, partial chunk by masked pointer loads). Prediction: on the training
# shapes it beats per-expert cuBLAS with beta=1 (Mixtral EP=1 4096 tok fc1: per_expert 4.55 ms, bf16 grouped_mm alone
# 2.96, the fp32 read-modify-write ~1.9 at HBM rate; kernel with pointer loads 6.09) — toward ~3.5 ms if the
# pipelined TMA loop reaches ~cuBLAS and two programs per SM overlap one's read-modify-write with the other's loop.
# (1) GPU tests (compiled kernel both paths, the fused layer with main_grad at EP=1); (2) bench_wgrad at the training
# shapes (EP=1 and EP=2, 4096 tok) and the s9 EP=2 table, kernel#1 = the pointer path, then tile variants.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
COMET_TEST_DEVICE=cuda COMET_DEBUG=1 timeout 220 python -m pytest -q tests/test_wgrad_kernel.py tests/test_grouped_linear.py \
  tests/test_fused_gpu.py -k "ep1 or compiled or on_gpu" > $OUT/gpu_tests.log 2>&1
echo "GPU tests exit $? ($((SECONDS-T0)) s)"; grep -E "passed|failed|FAIL" $OUT/gpu_tests.log | tail -5
KC='[{"USE_TMA": false}, {"num_stages": 4}, {"BN": 256}, {"BK": 128, "num_stages": 2}, {"num_warps": 4}]'
mkdir -p $OUT/w
timeout 60 python benchmarks/bench_wgrad.py --ep 1 --tokens 4096 --cases mixtral-8x7b,qwen3-30b-a3b,phi3.5-moe \
  --kernel-configs "$KC" --out $OUT/w/ep1_4096 > $OUT/w/ep1_4096.log 2>&1
echo "bench_wgrad ep1 4096 exit $? ($((SECONDS-T0)) s)"
timeout 60 python benchmarks/bench_wgrad.py --ep 2 --tokens 4096 --cases mixtral-8x7b,phi3.5-moe \
  --kernel-configs "$KC" --out $OUT/w/ep2_4096 > $OUT/w/ep2_4096.log 2>&1
echo "bench_wgrad ep2 4096 exit $? ($((SECONDS-T0)) s)"
timeout 150 python benchmarks/bench_wgrad.py --ep 2 --kernel-configs "$KC" --out $OUT/w/ep2 > $OUT/w/ep2.log 2>&1
echo "bench_wgrad ep2 exit $? ($((SECONDS-T0)) s)"
python - <<'PY'
import json, os
out = os.environ["OUT"]
for run in ("ep1_4096", "ep2_4096", "ep2"):
    path = f"{out}/w/{run}/bench_wgrad.json"
    if not os.path.exists(path):
        print(run, "missing"); continue
    for case, entry in json.load(open(path))["cases"].items():
        for gemm in ("fc1", "fc2"):
            g = entry.get(gemm)
            if not g:
                continue
            names = ["grouped_mm", "per_expert", "kernel"] + [f"kernel#{i}" for i in range(1, 6)]
            cells = " ".join(f"{g[n]['ms']:6.3f}" if n in g else "   -  " for n in names)
            print(f"{run:8s} {case[:12]:12s} {gemm} floor {g['floor_ms']:6.3f} | gm pe k k1(ptr) k2(s4) k3(BN256) k4(BK128) k5(w4): {cells}")
PY
tar czf $OUT/wgrad.tgz -C $OUT w && rm -rf $OUT/w
ls $OUT
