"""Run a sampling schedule of a recognised Ising torus (`ising_torus`) on the multispin lattice kernel.

This is what a THRML-style call on the uniform 2D Ising torus runs (`dispatch`): the block states
are placed on the lattice by the torus' site map, packed to one bit per spin, swept by the multispin
colour update (the Pallas kernel on CUDA GPUs, its jax.numpy twin elsewhere; identical words), and
unpacked at every sample of the schedule.

Randomness. The lattice kernel's own runs key every word by its index over all chains under one run
key. Here each chain must be driven by its own key, exactly as the unbatched call with that key, so
sweep t's update of colour c in a chain is keyed by `stream_seeds(chain words, 2t + c)` (the chain's
Threefry seed for that update, as in the pairwise kernels) and its words by their index inside the
chain (`multispin.chain_hashes`). A chain's samples therefore depend on its key alone: not on the
other chains, not on how they are split over devices.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec
from jaxtyping import Array, ArrayLike, Bool, Float, Int32, UInt32

from heatbath.block_sampling import SamplingSchedule
from heatbath.errors import HeatbathError
from heatbath.kernels.checkerboard import float32_parameters, heat_bath_thresholds
from heatbath.kernels.counter_rng import stream_seeds
from heatbath.kernels.ising_torus import IsingTorus
from heatbath.kernels.multispin_run import MAX_GROUP, group_size
from heatbath.kernels.pallas_backend import pallas_runs_on, sweeps_per_step
from heatbath.kernels.schedule_loop import run_schedule
from heatbath.kernels.multispin import PLANES, chain_hashes, pack_spins, packed_update, sweep_parameters, unpack_spins

__all__ = ["run_ising_torus", "run_torus_chains", "torus_index", "torus_backend", "TorusIndex", "BACKENDS"]

BACKENDS = ("pallas", "jnp", "interpret")
_RUN_KEY = (0, 0)  # the plane keys' run key: the chains' seeds carry the randomness
_MAX_SEED_WORDS = 2**23  # seeds of a group of sweeps (computed together, as the parameters): 32 MB at most


def _update(other, colour: int, params, seeds, t, backend: str):
    if backend == "jnp":
        hashes = chain_hashes(seeds[t, colour], other.shape[1:])
        return packed_update(other, colour, hashes, params[t, colour], planes=PLANES)
    from heatbath.kernels.multispin_pallas import pallas_packed_update

    return pallas_packed_update(other, colour, params, t, seeds=seeds, planes=PLANES, interpret=backend == "interpret")


def group_seeds(chain_words: UInt32[Array, "chains 2"], start, group: int) -> UInt32[Array, "group 2 chains"]:
    """Each chain's seed for both colour updates of sweeps start .. start + group - 1: update n = 2t + c
    of a chain is keyed by `stream_seeds(its words, n)`, as in the pairwise kernels."""
    streams = 2 * (start + jnp.arange(group, dtype=jnp.uint32))[:, None] + jnp.arange(2, dtype=jnp.uint32)
    return jax.vmap(jax.vmap(lambda s: stream_seeds(chain_words, s)))(streams)


def seeded_sweeps(state, chain_words, first, count: int, sweep_group, backend: str):
    """Sweeps first .. first + count - 1 (count static) in groups: `sweep_group(state, start, group,
    seeds)` runs `group` sweeps from sweep `start` with the chains' seeds of those sweeps (`group_seeds`,
    computed together, at most `_MAX_SEED_WORDS` of them)."""
    if count == 0:
        return state
    group = group_size(count, min(MAX_GROUP, _MAX_SEED_WORDS // (2 * chain_words.shape[0])))

    def one_group(g, state):
        start = first + g.astype(jnp.uint32) * jnp.uint32(group)
        return sweep_group(state, start, group, group_seeds(chain_words, start, group))

    return jax.lax.fori_loop(0, count // group, one_group, state)


def site_lattice(block_states: list[Array], index: "TorusIndex", L: int) -> Array:
    """The free blocks' states `[chains, n_b]` placed on the lattice, `[L, L, chains]`."""
    flat = jnp.concatenate(block_states, axis=1)
    return flat[:, index.sites].T.reshape(L, L, flat.shape[0])


def over_chains(local, devices: tuple, chain_words, lattice) -> Array:
    """`local(chain_words, lattice)` with the chains (last axis of the lattice, first of the words)
    split over `devices` when there are several; its result has the chains last."""
    if len(devices) <= 1:
        return local(chain_words, lattice)
    mesh = Mesh(np.asarray(devices), ("chains",))
    return jax.shard_map(
        local, mesh=mesh, in_specs=(PartitionSpec("chains"), PartitionSpec(None, None, "chains")),
        out_specs=PartitionSpec(None, None, None, "chains"), check_vma=False,
    )(chain_words, lattice)


def observed_samples(lattices: Array, index: "TorusIndex") -> list[Array]:
    """Per observed block, `[chains, samples, n]` from the lattices `[samples, L, L, chains]`."""
    samples, L, _, chains = lattices.shape
    by_site = lattices.reshape(samples, L * L, chains)
    return [jnp.moveaxis(by_site[:, positions], -1, 0) for positions in index.observed]


def _run_local(chain_words, spins, tables, schedule: SamplingSchedule, backend: str):
    """Packed sweeps of the local chains; the lattice `[samples, L, L, chains]` at every sample."""

    def sweep_group(words, start, group, seeds):
        params = sweep_parameters(tables, _RUN_KEY, start, group, PLANES)  # [group, 2, N_PARAMS]

        def sweep(t, words):
            even = _update(words[1], 0, params, seeds, t, backend)
            return even, _update(even, 1, params, seeds, t, backend)

        return jax.lax.fori_loop(0, group, sweep, words, unroll=sweeps_per_step(backend, group))

    def sweeps(words, first, count):
        return seeded_sweeps(words, chain_words, first, count, sweep_group, backend)

    words = pack_spins(spins)
    return run_schedule((words[:, 0], words[:, 1]), schedule, sweeps, lambda w: unpack_spins(jnp.stack(w, axis=1)),
                        backend)


class TorusIndex(NamedTuple):
    """Where the torus' nodes go, as device arrays for `run_ising_torus`.

    They are made once, outside any batching rule, and handed in as arguments (as the weights are):
    arrays made inside a `custom_vmap` rule became constants that a later execution of the caller's
    `jit` did not pass on an H200 ("Execution supplied 3 arguments but compiled program expected 8")."""

    sites: Int32[Array, "sites"]  # the spec-wide node id at each lattice position (row-major)
    observed: tuple  # per observed block, the lattice position of each of its nodes: Int32[Array, "n"]


def torus_index(torus: IsingTorus, observed_ids: list[np.ndarray]) -> TorusIndex:
    """The `TorusIndex` of `torus` for the observed blocks' spec-wide ids `observed_ids`."""
    sites = torus.sites.ravel()
    position = np.empty_like(sites)
    position[sites] = np.arange(sites.size, dtype=sites.dtype)  # node id -> lattice position
    return TorusIndex(
        jnp.asarray(sites, jnp.int32), tuple(jnp.asarray(position[np.asarray(ids)], jnp.int32) for ids in observed_ids)
    )


@partial(jax.jit, static_argnames=("L", "schedule", "backend", "devices"))
def run_torus_chains(
    chain_words: UInt32[Array, "chains 2"],
    block_states: list[Bool[Array, "chains n"]],
    index: TorusIndex,
    J: Float[ArrayLike, ""],
    h: Float[ArrayLike, ""],
    *,
    L: int,
    schedule: SamplingSchedule,
    backend: str,
    devices: tuple,
) -> list[Bool[Array, "chains samples n"]]:
    """The compiled core of `run_ising_torus`, with the coupling J and the bias h as (traced) arguments,
    so new weights reuse the compiled run. Compiled once per (L, schedule, backend, devices, shapes):
    `sample_states` traces its kernel even when called eagerly (custom_vmap), and without a jit of its
    own the route's loops were compiled again on every such call (2 s a call for a 64² torus on the
    CPU, against 0.04 s now)."""
    lattice = site_lattice(block_states, index, L)
    spins = jnp.where(lattice, jnp.int8(1), jnp.int8(-1))
    tables = heat_bath_thresholds(*float32_parameters(1.0, J, h))
    local = partial(_run_local, tables=tables, schedule=schedule, backend=backend)
    return [x > 0 for x in observed_samples(over_chains(local, devices, chain_words, spins), index)]


def run_ising_torus(
    torus: IsingTorus,
    schedule: SamplingSchedule,
    chain_words: UInt32[Array, "chains 2"],
    block_states: list[Bool[Array, "chains n"]],
    index: TorusIndex,
    backend: str,
    devices: tuple = (),
) -> list[Bool[Array, "chains samples n"]]:
    """Samples `[chains, samples, len(block)]` of each observed block (`index`, from `torus_index`)
    after `schedule` on the torus, from the free blocks' states `[chains, n_b]`. `backend`: "pallas"
    (CUDA GPUs), "jnp", or "interpret" (the Pallas kernel interpreted, for tests). Chains are split
    over `devices` when there are several (their number must divide the chain count)."""
    check_backend(backend)
    return run_torus_chains(chain_words, list(block_states), index, torus.J, torus.h, L=torus.L, schedule=schedule,
                            backend=backend, devices=tuple(devices))


def check_backend(backend: str) -> None:
    """Raise unless `backend` is one a torus route runs on (`BACKENDS`)."""
    if backend not in BACKENDS:
        raise HeatbathError(f"backend must be one of {BACKENDS}; got {backend!r}. Use 'pallas' on CUDA GPUs, 'jnp' anywhere.")


def torus_backend(devices=None) -> str | None:
    """How a recognised Ising or Potts torus runs by default on `devices` (default: the default
    backend's): "pallas" on CUDA GPUs; None elsewhere, where the pairwise kernels (the compiled CPU
    kernel for spins) run it instead: on a CPU the Ising route was slower (BENCHMARKS.md)."""
    return "pallas" if pallas_runs_on(tuple(jax.devices() if devices is None else devices)) else None
