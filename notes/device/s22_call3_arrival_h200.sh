# Session 22, call 3 (nvidia-h200, the GPU of the 2xH200 machine the issues' targets name): calls 1-2's sweep again.
# Calls 1-2 (H100) at skew 0, own-rows-first vs expert-major fc1 ms: DSv3-like 6.17 / 5.26, Qwen3-30B-A3B 0.69 / 0.62,
# Qwen1.5 0.96 / 0.91, Qwen2-57B 4.68 / 4.55, Mixtral 6.07 / 6.08; expert-major's lead shrinks with the peer's skew and
# turns into a loss from 100-300 us on Qwen1.5 / Qwen2-57B, not on DSv3-like (1000 us: 6.23 / 5.87).
# Prediction (H200: ~1.4x the HBM bandwidth, so re-reading weights costs own-rows-first less): the same ordering, the
# fine-grained gains smaller (DSv3-like -8..-12%, Qwen3 -5..-10%).
bash notes/device/s22_call1_arrival.sh
