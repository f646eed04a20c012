"""Long sampling runs at XLA's default optimisation in a suite that compiles for speed (conftest.py).

CPU-only test runs compile with `FAST_COMPILE`: XLA's backend optimisation level 0, and two XLA:CPU
choices that shorten compilation without changing what a program computes (the legacy fusion
emitter instead of the MLIR fusion emitters, which build an MLIR context per fusion; the default
scheduler instead of the concurrency-optimised one). On the 2-core AMD VM they took
`test_ising_torus.py test_train.py` from 242 s to 167-172 s in one process, and the two interpreted
Potts kernel tests from 38-42 s to 31 s.

At level 0 a compiled sampling loop runs about 2-3 times slower on XLA:CPU, which matters only for
the few tests that sample for many seconds: a jit of the test's own takes `compiler_options=OPTIMISED`;
an example script, whose jits are not the test's, runs in a fresh process with XLA's defaults
(`run_optimised`), as users run it.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

FAST_COMPILE = ("--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false "
                "--xla_cpu_enable_concurrency_optimized_scheduler=false")
# XLA's defaults: the default level and, in CPU-only runs, FAST_COMPILE's XLA:CPU options back at their
# defaults (with the legacy fusion emitter the long runs of test_exact_agreement.py ran 12 s longer;
# a GPU compilation refuses XLA:CPU options)
_CPU_DEFAULTS = {"xla_cpu_use_fusion_emitters": True, "xla_cpu_enable_concurrency_optimized_scheduler": True}
OPTIMISED = {"xla_backend_optimization_level": 3, **(_CPU_DEFAULTS if os.environ.get("JAX_PLATFORMS") == "cpu" else {})}
ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_optimised(code: str, timeout: float = 1200) -> tuple[str, dict]:
    """Run Python `code` in a new process at XLA's default optimisation level, from the repository
    root. The code's last line of output must be a JSON object: returns (the output before it, that
    object). A failure raises with the process's error output."""
    env = dict(os.environ, XLA_FLAGS=os.environ.get("XLA_FLAGS", "").replace(FAST_COMPILE, "").strip())
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise AssertionError(f"the script failed (exit code {done.returncode}):\n{done.stderr[-4000:]}")
    *printed, last = done.stdout.strip().splitlines()
    return "\n".join(printed), json.loads(last)
