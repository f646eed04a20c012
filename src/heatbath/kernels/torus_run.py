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
from jaxtyping import Array, Bool, Int32, UInt32

from heatbath.block_sampling import SamplingSchedule
from heatbath.kernels.checkerboard import float32_parameters, heat_bath_thresholds
from heatbath.kernels.counter_rng import stream_seeds
from heatbath.kernels.ising_torus import IsingTorus
from heatbath.kernels.multispin_run import MAX_GROUP, group_size
from heatbath.kernels.pallas_backend import sweeps_per_step
from heatbath.kernels.multispin import PLANES, chain_hashes, pack_spins, packed_update, sweep_parameters, unpack_spins

__all__ = ["run_ising_torus", "torus_index", "TorusIndex", "BACKENDS"]

BACKENDS = ("pallas", "jnp", "interpret")
_RUN_KEY = (0, 0)  # the plane keys' run key: the chains' seeds carry the randomness
_MAX_SEED_WORDS = 2**23  # seeds of a group of sweeps (computed together, as the parameters): 32 MB at most


def _update(other, colour: int, params, seeds, t, backend: str):
    if backend == "jnp":
        hashes = chain_hashes(seeds[t, colour], other.shape[1:])
        return packed_update(other, colour, hashes, params[t, colour], planes=PLANES)
    from heatbath.kernels.multispin_pallas import pallas_packed_update

    return pallas_packed_update(other, colour, params, t, seeds=seeds, planes=PLANES, interpret=backend == "interpret")


def _sweeps(words, chain_words, tables, first, count: int, backend: str):
    """Sweeps first, first + 1, ... (count of them, static) of both colours."""
    if count == 0:
        return words
    group = group_size(count, min(MAX_GROUP, _MAX_SEED_WORDS // (2 * chain_words.shape[0])))

    def sweep_group(g, words):
        start = first + g.astype(jnp.uint32) * jnp.uint32(group)
        params = sweep_parameters(tables, _RUN_KEY, start, group, PLANES)  # [group, 2, N_PARAMS]
        streams = 2 * (start + jnp.arange(group, dtype=jnp.uint32))[:, None] + jnp.arange(2, dtype=jnp.uint32)
        seeds = jax.vmap(jax.vmap(lambda s: stream_seeds(chain_words, s)))(streams)  # [group, 2, chains]

        def sweep(t, words):
            even = _update(words[1], 0, params, seeds, t, backend)
            return even, _update(even, 1, params, seeds, t, backend)

        return jax.lax.fori_loop(0, group, sweep, words, unroll=sweeps_per_step(backend, group))

    return jax.lax.fori_loop(0, count // group, sweep_group, words)


def _run_local(chain_words, spins, tables, schedule: SamplingSchedule, backend: str):
    """Packed sweeps of the local chains; the lattice `[samples, L, L, chains]` at every sample."""
    words = pack_spins(spins)
    words = (words[:, 0], words[:, 1])
    words = _sweeps(words, chain_words, tables, jnp.uint32(0), schedule.n_warmup, backend)

    def sample(words, i):
        start = jnp.uint32(schedule.n_warmup) + i * jnp.uint32(schedule.steps_per_sample)
        words = _sweeps(words, chain_words, tables, start, schedule.steps_per_sample, backend)
        return words, unpack_spins(jnp.stack(words, axis=1))

    first = unpack_spins(jnp.stack(words, axis=1))
    _, rest = jax.lax.scan(sample, words, jnp.arange(schedule.n_samples - 1, dtype=jnp.uint32))
    return jnp.concatenate([first[None], rest])


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
def _run(chain_words, flat_spins, index: TorusIndex, J, h, *, L: int, schedule: SamplingSchedule, backend, devices):
    # Compiled once per (L, schedule, backend, devices, shapes): `sample_states` traces its kernel even
    # when called eagerly (custom_vmap), and without a jit of its own the route's loops were compiled
    # again on every such call (2 s a call for a 64² torus on the CPU, against 0.04 s now).
    n_chains = chain_words.shape[0]
    spins = jnp.where(flat_spins[:, index.sites], jnp.int8(1), jnp.int8(-1)).T.reshape(L, L, n_chains)
    tables = heat_bath_thresholds(*float32_parameters(1.0, J, h))
    local = partial(_run_local, tables=tables, schedule=schedule, backend=backend)
    if len(devices) <= 1:
        lattices = local(chain_words, spins)
    else:
        mesh = Mesh(np.asarray(devices), ("chains",))
        lattices = jax.shard_map(
            local, mesh=mesh, in_specs=(PartitionSpec("chains"), PartitionSpec(None, None, "chains")),
            out_specs=PartitionSpec(None, None, None, "chains"), check_vma=False,
        )(chain_words, spins)
    by_site = lattices.reshape(lattices.shape[0], L * L, n_chains)  # [samples, sites, chains]
    return [jnp.moveaxis(by_site[:, positions] > 0, -1, 0) for positions in index.observed]  # [chains, samples, n]


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
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    flat = jnp.concatenate(block_states, axis=1)
    return _run(chain_words, flat, index, torus.J, torus.h, L=torus.L, schedule=schedule, backend=backend,
                devices=tuple(devices))
