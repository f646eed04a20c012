"""Test configuration: run on the CPU with several host devices, so sharding code can be tested on a laptop."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()

import matplotlib  # noqa: E402

matplotlib.use("Agg")
