"""Run a test module's ``__main__`` under ``TRITON_INTERPRET=1`` in a subprocess and return its JSON report.

The flag must be set before the kernel modules are imported, so interpreted runs cannot share the pytest process;
the module prints its report as JSON on its last line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_interpreted(module: str, *args: str, timeout: int = 600, **env_overrides: str):
    """``python -m module *args`` with the Triton interpreter on: the parsed JSON of its last stdout line."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(env_overrides)
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
