"""Test configuration: run on the CPU with several host devices, so sharding code can be tested on a laptop.

The suite is bound by compilation: most tests compile small programs that then run for milliseconds,
and LLVM's optimisation of XLA:CPU code is much of that (the interpreted Pallas kernels compile in
a third less time without it). So CPU-only runs compile at XLA's backend optimisation level 0 with
two XLA:CPU options that shorten compilation further (`optimised.FAST_COMPILE`), unless XLA_FLAGS
already sets a level (GPU runs compile as users' programs do); the few long sampling runs compile at
the default level instead
(`optimised.OPTIMISED` for one jit, `optimised.run_optimised` for a whole example script).
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
if os.environ["JAX_PLATFORMS"] == "cpu" and "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
    from optimised import FAST_COMPILE  # noqa: E402

    os.environ["XLA_FLAGS"] += " " + FAST_COMPILE

import matplotlib  # noqa: E402

matplotlib.use("Agg")


import pytest  # noqa: E402


@pytest.fixture
def paired_on_cpu(monkeypatch):
    """Both phases of a training gradient in the same updates (`kernels.paired_runs`), on a CPU through
    the table kernel's jax.numpy twin; gives the list of what every `fold_paired_runs` call returned
    (None where a pair was declined), so a test can check that the pairs ran."""
    import heatbath.kernels.paired_runs as paired_runs

    returned = []
    original = paired_runs.fold_paired_runs
    monkeypatch.setattr(paired_runs, "PAIRED_METHOD", "table-jnp")
    monkeypatch.setattr(paired_runs, "fold_paired_runs", lambda *a, **k: returned.append(original(*a, **k)) or returned[-1])
    return returned
