# Session 16, call 12 (one GPU). `bench_layer.py --tune` (new): the tuner's nine candidates and the current choice
# timed as comet_cfg<i> variants (fwd+bwd), the fastest stored in the tuning cache under the fused backend's key.
# Check: the cache file holds the key, and choose_config reads back the stored configuration.
# Prediction: the winner is within ~5% of the default on Qwen3 at 4096 tokens (the default already took the session's
# push split); the read-back equals the stored config.
source notes/device/common.sh
export COMET_TUNING_CACHE=/tmp/tune/tuning.json
timeout 420 python -m torch.distributed.run --standalone --nproc-per-node=1 benchmarks/bench_layer.py \
  --cases qwen3-30b-a3b --tokens 4096 --variants comet --tune --iters 10 --warmup 3 --out /tmp/tune_out \
  > $OUT/tune.log 2>&1
echo "tune exit $? ($((SECONDS-T0)) s)"
grep -v -i warn $OUT/tune.log | grep -E "^tuned|comet" | cut -c1-160 | tail -14
cp $COMET_TUNING_CACHE $OUT/tuning.json 2>/dev/null; cp /tmp/tune_out/bench_layer_ep1.json $OUT/tune_bench_layer_ep1.json
python - <<'PY'
import json, torch
from comet_megatron.tuning import ShapeKey, choose_config, default_config
props = torch.cuda.get_device_properties(0)
key = ShapeKey(4096, 2048, 768, 128, 8, 1, torch.cuda.get_device_name(0), props.multi_processor_count)
tuned = json.load(open("/tmp/tune_out/bench_layer_ep1.json"))["cases"]["qwen3-30b-a3b"]["tuned"]
import dataclasses
read_back = dataclasses.asdict(choose_config(key))
print("key in cache:", key.as_str() in json.load(open("/tmp/tune/tuning.json")))
print("read back == stored:", read_back == tuned["config"])
print("default:", dataclasses.asdict(default_config(key)) == read_back, "| stored", tuned)
PY
