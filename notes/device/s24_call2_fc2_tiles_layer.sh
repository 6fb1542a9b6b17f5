# Session 24, call 2 (one GPU, H200 if lent). fc2 ⊕ combine 256 wide + flattened as the default for every shape
# (call 1: bench_gemm_core, H100). The EP=1 layer fwd+bwd, six cases at their issue token counts, per-kernel GPU ms: comet (new default) vs comet_cfg0
# (128 wide, flattened: the old default below ffn 8192) vs comet_cfg1 (256 wide, loops apart: Mixtral's old
# default), two rounds.
# Prediction: fc2_combine_kernel -15..-25% on Phi / Qwen2-57B / DSv3-like vs cfg0, -5..-15% on Qwen1.5 /
# Qwen3; Mixtral within noise of cfg1; the layer's fwd+bwd -3..-8% on Phi / Qwen2-57B / DSv3-like.
source notes/device/common.sh
nvidia-smi --query-gpu=name --format=csv,noheader
CASES=phi3.5-moe,qwen2-57b-a14b,dsv3-like,qwen1.5-moe-a2.7b,qwen3-30b-a3b,mixtral-8x7b
for round in 1 2; do
  timeout 280 python -m torch.distributed.run --standalone --nproc-per-node=1 benchmarks/bench_layer.py \
    --cases $CASES --variants comet --comet-configs '[{"fc2_block_n": 128}, {"fc2_flatten": false}]' \
    --profile-kernels 5 --iters 10 --out /tmp/layer_$round > /tmp/layer_$round.log 2>&1
  echo "layer round $round exit $? ($((SECONDS-T0)) s)"
  cp /tmp/layer_$round/bench_layer_ep1.json $OUT/layer_$round.json
done
python - <<'PY'
import glob, json, os
out = os.environ["OUT"]
print(f"{'case':18} {'variant':11} {'fwd':>7} {'fwdbwd':>7} {'fc2_combine':>11}   (ms, per round)")
rounds = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/layer_*.json"))]
for case in rounds[0]["cases"]:
    for v in ("comet", "comet_cfg0", "comet_cfg1"):
        cols = []
        for d in rounds:
            r = d["cases"][case]["variants"].get(v, {})
            cols.append(f"{r.get('fwd_ms', float('nan')):7.3f} {r.get('fwdbwd_ms', float('nan')):7.3f} "
                        f"{r.get('kernels_ms', {}).get('fc2_combine_kernel', float('nan')):11.3f}")
        print(f"{case:18} {v:11} " + " | ".join(cols))
PY
cd $OUT && tar czf layers.tgz layer_*.json && rm -f layer_*.json; ls $OUT
