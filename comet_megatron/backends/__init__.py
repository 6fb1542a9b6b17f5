"""Backends: how tokens reach the experts and come back.

``reference`` — pure PyTorch expert parallelism (all_to_all + grouped matmuls); ground truth, runs
anywhere (gloo/CPU, NCCL/GPU). ``fused`` — COMET's persistent Triton kernels (dispatch ⊕ fc1,
fc2 ⊕ combine) over NVSHMEM symmetric memory. ``auto`` picks ``fused`` when it can run.
"""

from comet_megatron.backends.base import Dispatched, ExpertWeights, MoEBackend
from comet_megatron.backends.selection import BACKEND_CHOICES, create_backend

__all__ = ["BACKEND_CHOICES", "Dispatched", "ExpertWeights", "MoEBackend", "create_backend"]
