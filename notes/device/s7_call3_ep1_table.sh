# Session 7, call 3 (nvidia-h200, one GPU; the 2-GPU machine is still not lent). Every issue case at EP=1 with the
# current code (device plan, reordered backward), Megatron and NCCL+grouped_mm beside Comet, per-kernel GPU times
# (--profile-kernels 3). Question: without communication, how far from the floor is each case? If the fine-grained
# cases stay several times the floor at EP=1, their EP=2 gap (Qwen1.5 5.38x fwd) is kernel work and fixed costs, not
# communication. Predicted: Mixtral/Phi fwd ~1.5x floor; Qwen1.5 ~3-4x; peak <= Megatron on every case.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 NVSHMEM_SYMMETRIC_SIZE=8G
python -m pip install -q --no-deps --no-index --target /tmp/site .whl/megatron_core-*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$SECONDS
timeout 500 python -m torch.distributed.run --standalone --nproc-per-node=1 benchmarks/bench_layer.py \
  --cases mixtral-8x7b,qwen1.5-moe-a2.7b,qwen2-57b-a14b,phi3.5-moe,dsv3-like --variants megatron,nccl_grouped_mm,comet \
  --profile-kernels 3 --out $OUT > $OUT/bench_layer_ep1.log 2>&1
echo "bench exit $? ($((SECONDS-T0)) s)"
grep -v -i warn $OUT/bench_layer_ep1.log | grep -A30 "^case " | head -40
ls $OUT
