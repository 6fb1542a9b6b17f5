# Session 22, call 2: call 1 again (the repeat shows the noise) with the peer_ready column (rank 0's layer0 with the
# peer's rows delivered beforehand: what the skew columns add is the wait) and Qwen3-30B-A3B (issue 6's fine-grained
# training layer, 4 M-tiles per expert at EP=2). Call 1 (H100): at skew 0 expert-major fc1 was faster on DSv3-like
# (5.26 vs 6.19 ms), Qwen1.5 (0.91 vs 0.96), Qwen2-57B (4.59 vs 4.72), even on Mixtral; from 100-300 us of skew it lost
# on Qwen1.5 / Qwen2-57B. Prediction: same ordering; peer_ready ≈ call 1's skew-0 times (the wait at skew 0 < 3%).
bash notes/device/s22_call1_arrival.sh
