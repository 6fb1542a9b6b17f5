"""The repository's scripts (``benchmarks/*.py``, ``examples/*.py``) imported as modules, for tests of their logic."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative_path: str, name: str | None = None) -> ModuleType:
    """Execute ``ROOT / relative_path`` as module ``name`` (default: the file's stem) and return it.

    The module is registered in ``sys.modules`` (dataclasses look their module up there) and the script's folder is
    put on ``sys.path``, as running the script would, so that it imports its sibling scripts."""
    path = ROOT / relative_path
    if not path.is_file():
        raise FileNotFoundError(f"no script at {path}")
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
