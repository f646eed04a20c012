"""The sampling schedule as a loop: warm-up sweeps, then a sample every `steps_per_sample` sweeps.

Every kernel path (the pairwise kernels' flat or per-block state, the lattice routes' packed words)
runs its sweeps under the same loop, so the schedule's meaning (the first sample follows the warm-up)
and the GPU unroll of the sample loop (`pallas_backend.samples_per_step`) live in one place.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jaxtyping import PyTree

from heatbath.block_sampling import SamplingSchedule
from heatbath.kernels.pallas_backend import samples_per_step

__all__ = ["run_schedule"]


def run_schedule(state, schedule: SamplingSchedule, sweeps: Callable, read: Callable, backend: str) -> PyTree:
    """`read(state)` at every sample of `schedule`, each leaf stacked along a new leading axis:
    `sweeps(state, first, count)` runs sweeps first .. first + count - 1 (count static); the first
    sample follows the warm-up. `backend` "pallas" unrolls the sample loop (GPU kernels)."""
    state = sweeps(state, jnp.uint32(0), schedule.n_warmup)

    def sample(state, i):
        start = jnp.uint32(schedule.n_warmup) + i * jnp.uint32(schedule.steps_per_sample)
        state = sweeps(state, start, schedule.steps_per_sample)
        return state, read(state)

    n_rest = schedule.n_samples - 1
    _, rest = jax.lax.scan(sample, state, jnp.arange(n_rest, dtype=jnp.uint32),
                           unroll=samples_per_step(backend, n_rest, schedule.steps_per_sample))
    return jax.tree.map(lambda first, later: jnp.concatenate([first[None], later]), read(state), rest)
