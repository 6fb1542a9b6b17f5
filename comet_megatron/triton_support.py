"""Whether Triton is installed, and whether its kernels run under the interpreter (``TRITON_INTERPRET=1``).

Kept apart from the kernels so that the CPU-only paths can ask without importing Triton.
"""

from __future__ import annotations

import importlib.util
import os

HAVE_TRITON = importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """Triton's interpreter runs the kernels on CPU tensors (the CPU tests)."""
    return os.environ.get("TRITON_INTERPRET") == "1"
