"""Whether Triton is installed, whether its kernels run under the interpreter (``TRITON_INTERPRET=1``), and whether
its TMA descriptors can address a tensor.

Kept apart from the kernels so that the CPU-only paths can ask without importing Triton.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

HAVE_TRITON = importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """Triton's interpreter runs the kernels on CPU tensors (the CPU tests)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


@functools.cache
def _has_tma(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index)[0] >= 9


def tma_capable(t: torch.Tensor) -> bool:
    """A Triton TMA descriptor can address ``t``: on a Hopper-or-newer GPU (or a CPU tensor under the interpreter, which
    emulates descriptors), no empty dimension, unit last stride, every other stride and the base 16-byte aligned."""
    on_tma_device = not t.is_cuda if interpreting() else t.is_cuda and _has_tma(t.device.index or 0)
    return (
        on_tma_device
        and t.numel() > 0
        and t.stride(-1) == 1
        and all((s * t.element_size()) % 16 == 0 for s in t.stride()[:-1])
        and t.data_ptr() % 16 == 0
    )


def tma_descriptors(*tensors_and_blocks: tuple[torch.Tensor, list[int]]):
    """Host TMA descriptors, one per ``(tensor, block shape)``, or ``None`` unless :func:`tma_capable` holds for every
    tensor (then the caller's kernel takes its pointer path)."""
    if not all(tma_capable(t) for t, _ in tensors_and_blocks):
        return None
    from triton.tools.tensor_descriptor import TensorDescriptor

    return tuple(TensorDescriptor.from_tensor(t, block) for t, block in tensors_and_blocks)
