"""Long sampling runs at XLA's default optimisation in a suite that compiles at level 0 (conftest.py).

At level 0 a compiled sampling loop runs about 2-3 times slower on XLA:CPU, which matters only for
the few tests that sample for many seconds: a jit of the test's own takes `compiler_options=OPTIMISED`;
an example script, whose jits are not the test's, runs in a fresh process without the flag
(`run_optimised`).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

LEVEL_0 = "--xla_backend_optimization_level=0"
OPTIMISED = {"xla_backend_optimization_level": 3}  # XLA's default level
ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_optimised(code: str, timeout: float = 1200) -> tuple[str, dict]:
    """Run Python `code` in a new process at XLA's default optimisation level, from the repository
    root. The code's last line of output must be a JSON object: returns (the output before it, that
    object). A failure raises with the process's error output."""
    env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "").replace(LEVEL_0, "").strip())
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise AssertionError(f"the script failed (exit code {done.returncode}):\n{done.stderr[-4000:]}")
    *printed, last = done.stdout.strip().splitlines()
    return "\n".join(printed), json.loads(last)
