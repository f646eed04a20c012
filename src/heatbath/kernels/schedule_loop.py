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
from heatbath.kernels.pallas_backend import samples_per_step, sweeps_per_step

__all__ = ["run_schedule", "seeded_sweeps"]


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


def seeded_sweeps(sweep: Callable, seeds_of: Callable, backend: str) -> Callable:
    """`sweeps(carry, start, count)` for `run_schedule` over a carry `(state, seeds)`, where `seeds` are
    the next sweep's: `sweep(state, seeds)` makes the new state and `seeds_of(sweep_index)` the seeds
    of the sweep after it. The seeds travel in the loop carry so that they are materialised: computed
    inside the sweep, XLA fuses the per-chain cipher into the per-(node, chain) loop and recomputes it
    for every element (measured 70x slower on XLA:CPU; an optimisation barrier does not survive to
    fusion). `backend` "pallas" runs several sweeps a loop step (`sweeps_per_step`): on a GPU a step
    costs about as much as a small sweep."""

    def sweeps(carry, start, count: int):
        def body(i, carry):
            state, seeds = carry
            return sweep(state, seeds), seeds_of(start + i.astype(jnp.uint32) + jnp.uint32(1))

        return jax.lax.fori_loop(0, count, body, carry, unroll=sweeps_per_step(backend, count)) if count else carry

    return sweeps
