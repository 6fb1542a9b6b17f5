# Session 13, call 2 (one GPU). Call 1: the warp-specialized Gluon fc1 core is bit-identical to the Triton core's act and
# preact on all five cases and 0-5% faster in the first round (Mixtral 4096 3.08 vs 3.21 ms, Qwen2-57B 3.97 vs 4.17, Phi
# and DSv3 even); grouped_mm still ahead (2.96, 3.75). Where is the rest? (a) EPILOGUE=0: the main loop alone, no stores
# (outputs unchecked) = what any epilogue work costs on top; (b) EPILOGUE=2: full tiles written through a 32 KB staging
# buffer by TMA stores (async: they drain during the next tile's MMAs; the consumers wait only for the previous store to
# have read the buffer), partial tiles by masked stores from the MMA registers; 3 and 4 stages.
# Prediction: E0 ~5% below E1 on Mixtral/Qwen2-57B; E2 recovers half of that; E2 bit-identical to E1.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
mkdir -p $OUT/m $OUT/f
V='[{"epilogue": 1}, {"epilogue": 0}, {"epilogue": 2}, {"epilogue": 2, "stages": 3}]'
timeout 150 python benchmarks/probes/gluon_ws_fc1.py --cases mixtral-8x7b --tokens 4096 --variants "$V" --rounds 3 \
  --iters 30 --out $OUT/m > $OUT/probe_mixtral.log 2>&1
echo "probe mixtral exit $? ($((SECONDS-T0)) s)"; grep -v -i warn $OUT/probe_mixtral.log | tail -12
timeout 300 python benchmarks/probes/gluon_ws_fc1.py --cases phi3.5-moe,qwen2-57b-a14b,dsv3-like,qwen1.5-moe-a2.7b \
  --variants "$V" --rounds 3 --iters 30 --out $OUT/f > $OUT/probe_fine.log 2>&1
echo "probe others exit $? ($((SECONDS-T0)) s)"; grep -v -i warn $OUT/probe_fine.log | tail -20
mv $OUT/m/probe_gluon_ws_fc1.json $OUT/probe_mixtral4096.json; mv $OUT/f/probe_gluon_ws_fc1.json $OUT/probe_others.json
rmdir $OUT/m $OUT/f
python - <<'PY'
import json, os
for f in ("probe_mixtral4096.json", "probe_others.json"):
    for c, r in json.load(open(os.path.join(os.environ["OUT"], f)))["cases"].items():
        print(c, " ".join(f"{k} " + "/".join(f"{x:.3f}" for x in v) for k, v in r["ms"].items()))
PY
