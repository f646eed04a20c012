"""Recognise the uniform Potts model on a 2D torus inside a categorical program, and run it on the
Potts lattice kernel.

A THRML-style script samples the q-state Potts model on the periodic square lattice as a generic
categorical program: one coupling matrix J·I per edge (`CategoricalEBMFactor` weights), perhaps a
bias vector per node, the two checkerboard colours as blocks. heatbath's fastest sampler for it is the
Potts lattice kernel (`potts_lattice`: four neighbour reads and one alias-table read per site), which
the pairwise categorical kernel cannot match. `potts_torus` finds out from the program's structure and
concrete weights whether the program *is* that model; `run_potts_torus_chains` then runs a sampling
schedule on the kernel, each chain keyed by its own words as the unbatched call would be (`torus_run`
explains the randomness; the site's index inside its chain replaces the multispin word's).

It requires: categorical nodes only (2 ≤ q ≤ `MAX_STATES`), exactly two free blocks updated one after
the other and no clamped block; every node with four neighbours in the other block; every coupling
matrix J·I with one J (`coupling_structure.coupling_forms`), the same bias vector on every node; the
neighbour graph an L × L torus, L even and at least 6, coloured by the blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, UInt32

from heatbath.block_sampling import BlockSamplingProgram, SamplingSchedule
from heatbath.kernels.checkerboard_layout import colour_sites, join_colours
from heatbath.kernels.counter_rng import weyl_hashes
from heatbath.kernels.coupling_structure import known_coupling_forms
from heatbath.kernels.identity_cache import IdentityCache
from heatbath.kernels.ising_torus import IsingTorus, checkerboard_sites, four_neighbour_blocks, host_biases, ising_torus
from heatbath.kernels.pairwise_tables import NeighbourTables
from heatbath.kernels.pallas_backend import sweeps_per_step
from heatbath.kernels.potts_lattice import MAX_STATES, alias_table, conditional_probabilities, potts_update
from heatbath.kernels.schedule_loop import run_schedule
from heatbath.kernels.torus_run import (
    TorusIndex, check_backend, observed_samples, over_chains, seeded_sweeps, site_lattice,
)
from heatbath.validation import is_concrete

__all__ = ["PottsTorus", "potts_torus", "torus_model", "run_potts_torus", "run_potts_torus_chains"]


@dataclass(frozen=True, eq=False)
class PottsTorus:
    """A categorical program recognised as the q-state Potts model on an L × L torus: P(s_i = k | rest)
    ∝ exp(J·#{neighbours in state k} + h[k]). `sites` as in `ising_torus.IsingTorus`."""

    L: int
    q: int
    sites: np.ndarray  # [L, L] spec-wide node ids
    J: float
    h: np.ndarray  # [q] float32


def potts_torus(program: BlockSamplingProgram, tables: NeighbourTables) -> PottsTorus | None:
    """The Potts torus `program` samples, or None (see the module docstring for what is required)."""
    if tables.kind != "categorical" or not 2 <= tables.n_categories <= MAX_STATES:
        return None
    order = four_neighbour_blocks(program, tables)
    if order is None:
        return None
    forms = known_coupling_forms(program, tables)
    if not all(isinstance(form, float) for form in forms) or forms[0] != forms[1]:
        return None
    h = _uniform_bias(program, tables)
    if h is None:
        return None
    sites = checkerboard_sites(tables, order[0], multiple=2)
    if sites is None or sites.shape[0] < 6:
        return None
    return PottsTorus(sites.shape[0], tables.n_categories, sites, forms[0], h)


def torus_model(program: BlockSamplingProgram, tables: NeighbourTables) -> IsingTorus | PottsTorus | None:
    """The uniform Ising or Potts torus `program` samples (`ising_torus`, `potts_torus`), or None."""
    return ising_torus(program, tables) if tables.kind == "spin" else potts_torus(program, tables)


_BIASES: IdentityCache[np.ndarray | None] = IdentityCache(32)


def _uniform_bias(program: BlockSamplingProgram, tables: NeighbourTables) -> np.ndarray | None:
    """The bias vector `[q]` every node has, from concrete weights; None if they differ. Remembered per
    set of jax Array weights, as the coupling forms are."""
    arrays = []
    for b in (0, 1):
        for j in tables.bias_interactions[b]:
            arrays += [program.per_block_interactions[b][j].weights, program.per_block_interaction_active[b][j]]
    if not all(is_concrete(x) for x in arrays):
        return None
    return _BIASES.read(tables, arrays, lambda: _read_uniform_bias(program, tables))


def _read_uniform_bias(program: BlockSamplingProgram, tables: NeighbourTables) -> np.ndarray | None:
    bias = np.concatenate([host_biases(program, tables, b) for b in (0, 1)])  # [n, q]
    if not np.all(np.isfinite(bias)) or not np.all(bias == bias[:1]):
        return None
    return bias[0].copy()


def _run_local(chain_words, states, table, *, q: int, schedule: SamplingSchedule, backend: str):
    """Sweeps of the local chains; the lattice `[samples, L, L, chains]` at every sample."""
    colours = (colour_sites(states, 0), colour_sites(states, 1))
    L, M, _ = colours[0].shape
    site_hashes = weyl_hashes(jax.lax.iota(jnp.uint32, L * M)).reshape(L, M, 1)

    def update(other, colour, seeds, t):
        if backend == "jnp":
            return potts_update(other, colour, table, q, site_hashes ^ seeds[2 * t + colour], jnp.uint32(0))
        from heatbath.kernels.potts_pallas import pallas_potts_update

        return pallas_potts_update(other, colour, q, table, seeds, t, interpret=backend == "interpret")

    def sweep_group(colours, start, group, seeds):
        seeds = seeds.reshape(2 * group, -1)  # row 2t + c: update c of sweep t

        def sweep(t, colours):
            even = update(colours[1], 0, seeds, t)
            return even, update(even, 1, seeds, t)

        return jax.lax.fori_loop(0, group, sweep, colours, unroll=sweeps_per_step(backend, group))

    def sweeps(colours, first, count):
        return seeded_sweeps(colours, chain_words, first, count, sweep_group, backend)

    return run_schedule(colours, schedule, sweeps, join_colours, backend)


@partial(jax.jit, static_argnames=("L", "q", "schedule", "backend", "devices"))
def run_potts_torus_chains(
    chain_words: UInt32[Array, "chains 2"],
    block_states: list[Array],
    index: TorusIndex,
    J: Float[ArrayLike, ""],
    h: Float[ArrayLike, " q"],
    *,
    L: int,
    q: int,
    schedule: SamplingSchedule,
    backend: str,
    devices: tuple,
) -> list[Array]:
    """Samples `[chains, samples, len(block)]` of each observed block (`index`: `torus_run.torus_index`
    of the torus' sites) after `schedule`, from the free blocks' states `[chains, n_b]` (unsigned
    categories). J and h are traced: new weights reuse the compiled run. `backend`: "pallas" (CUDA
    GPUs), "jnp" or "interpret"; chains split over `devices` when there are several."""
    dtype = block_states[0].dtype
    states = site_lattice(block_states, index, L).astype(jnp.uint8)
    table = alias_table(conditional_probabilities(jnp.float32(1.0), jnp.asarray(J, jnp.float32),
                                                  jnp.asarray(h, jnp.float32), q))
    local = partial(_run_local, table=table, q=q, schedule=schedule, backend=backend)
    return [x.astype(dtype) for x in observed_samples(over_chains(local, devices, chain_words, states), index)]


def run_potts_torus(torus: PottsTorus, schedule: SamplingSchedule, chain_words, block_states, index: TorusIndex,
                    backend: str, devices: tuple = ()) -> list[Array]:
    """`run_potts_torus_chains` for a recognised torus (its L, q, J and h)."""
    check_backend(backend)
    return run_potts_torus_chains(chain_words, list(block_states), index, torus.J, torus.h, L=torus.L, q=torus.q,
                                  schedule=schedule, backend=backend, devices=tuple(devices))
