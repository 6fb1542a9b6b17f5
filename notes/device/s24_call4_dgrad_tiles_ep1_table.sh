# Session 24, call 4 (one GPU, EP=1). (a) The fc2 data-gradient 256 wide on the small-ffn shapes (call 3: Qwen1.5 /
# Qwen3's dispatch_dgrad 10-20% faster in bench_gemm_core): the layer fwd+bwd, comet (new default: 256) vs comet_cfg0
# (128, the old default there), per-kernel GPU ms, two rounds. (b) s23 call 1 again with every session-24 default:
# the five issue cases, Megatron / NCCL+grouped_mm / Comet, isolated and back to back, against s23's numbers.
# Prediction: dispatch_dgrad_kernel -10% on both; in the table Comet's fwd+bwd -3..-6% on Phi / Qwen2-57B / DSv3-like
# (fc2 ⊕ combine), the forward -1..-3% (one fc2 call of the two).
source notes/device/common.sh
nvidia-smi --query-gpu=name --format=csv,noheader
for round in 1 2; do
  timeout 150 python -m torch.distributed.run --standalone --nproc-per-node=1 benchmarks/bench_layer.py \
    --cases qwen1.5-moe-a2.7b,qwen3-30b-a3b --variants comet --comet-configs '[{"dgrad_block_n": 128}]' \
    --profile-kernels 5 --iters 10 --out /tmp/dgrad_$round > /tmp/dgrad_$round.log 2>&1
  echo "dgrad round $round exit $? ($((SECONDS-T0)) s)"
  cp /tmp/dgrad_$round/bench_layer_ep1.json $OUT/dgrad_$round.json
done
python - <<'PY'
import glob, json, os
out = os.environ["OUT"]
rounds = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/dgrad_*.json"))]
print(f"{'case':18} {'variant':11} {'fwdbwd':>7} {'dispatch_dgrad':>14}   (ms, per round)")
for case in rounds[0]["cases"]:
    for v in ("comet", "comet_cfg0"):
        cols = [f"{d['cases'][case]['variants'][v]['fwdbwd_ms']:7.3f} "
                f"{d['cases'][case]['variants'][v]['kernels_ms'].get('dispatch_dgrad_kernel', float('nan')):14.3f}"
                for d in rounds]
        print(f"{case:18} {v:11} " + " | ".join(cols))
PY
for mode in isolated b2b; do
  flag=""; [ $mode = b2b ] && flag="--back-to-back"
  timeout 200 python -m torch.distributed.run --standalone --nproc-per-node=1 benchmarks/bench_layer.py \
    --cases mixtral-8x7b,qwen1.5-moe-a2.7b,qwen2-57b-a14b,phi3.5-moe,dsv3-like \
    --variants megatron,nccl_grouped_mm,comet $flag --out $OUT > $OUT/layer_$mode.log 2>&1
  echo "layer $mode exit $? ($((SECONDS-T0)) s)"
done
for mode in isolated b2b; do echo "== $mode"; grep -v -i warn $OUT/layer_$mode.log | grep -A22 "^case " | head -24; done
cd $OUT && tar czf dgrad.tgz dgrad_*.json && rm -f dgrad_*.json; ls $OUT
