"""One short batched run of q = 5 Potts (256², 1,024 chains) to profile the categorical update under Nsight Compute.

The categorical Pallas kernel's launches are named `_kernel`; skipping the first two (warm-up sweep of
the compiling call) profiles a steady-state block update:

    PYTHONPATH=src ncu --kernel-name regex:_kernel --launch-skip 2 --launch-count 1 \\
        --section SpeedOfLight --section ComputeWorkloadAnalysis --section Occupancy \\
        --section LaunchStats --metrics smsp__inst_executed.sum python3 bench/potts_update_profile.py
"""

from __future__ import annotations

import os
import sys

import jax

sys.path.insert(0, os.path.dirname(__file__))
from flips_potts import _block_init, _init_states, build, lattice_inputs  # noqa: E402

from heatbath.kernels.batched import sample_states_batched  # noqa: E402


def main() -> None:
    L, chains = 256, 1024
    program, nodes, members, Block, SamplingSchedule, _ = build("heatbath", *lattice_inputs(L), 1.0)
    init = _block_init(_init_states(L, chains), members)
    out = sample_states_batched(jax.random.key(1), program, SamplingSchedule(2, 1, 1), init, [], [Block(nodes)])
    jax.block_until_ready(out)
    print(f"ran 2 sweeps of q = 5 Potts, L = {L}, {chains} chains on {jax.devices()[0].device_kind}")


if __name__ == "__main__":
    main()
