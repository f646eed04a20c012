"""Spin moments ⟨s_i⟩ and ⟨s_i s_j⟩ of one chain through the sampling kernels.

`estimate_moments` (and so `estimate_kl_grad`, the training gradient) accumulates moments with an
observer, which runs the generic sweep loop. For programs the pairwise spin kernels run (Ising models
and Boltzmann machines with the built-in conditional), the free blocks are sampled by the kernels a
piece at a time instead (`kernels.pieces`) and the moments summed from those samples. The clamped
nodes' values are known, so they are not sampled: a moment that involves one reads the clamped state.
`stack_samples` and `spin_moment_sums` also serve the training gradients (`train.moment_grads`).
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Key

from heatbath.block_sampling import BlockSamplingProgram, SamplingSchedule
from heatbath.kernels.pieces import fold_kernel_samples
from heatbath.pgm import AbstractNode

__all__ = ["kernel_moments", "stack_samples", "spin_moment_sums"]


def stack_samples(samples: list[Array], clamped: list[Array], dtype) -> Array:
    """`[P, nodes]` in the blocks' order: the free blocks' samples `[P, n_b]`, then the clamped blocks'
    values `[n_c]` repeated for every sample, all as `dtype`."""
    count = samples[0].shape[0]
    repeated = [jnp.broadcast_to(jnp.asarray(c).astype(dtype), (count,) + jnp.shape(c)) for c in clamped]
    return jnp.concatenate([s.astype(dtype) for s in samples] + repeated, axis=1)


def spin_moment_sums(up: Array, nodes, heads, tails) -> tuple[Float[Array, " n"], Float[Array, " e"]]:
    """(Σ_t s_i over `nodes`, Σ_t s_i s_j over the pairs `heads`, `tails`) from the `[P, nodes]` booleans
    `up` (True: +1): s_i s_j is +1 where two states agree, so the sums read booleans only."""
    first = jnp.where(up[:, nodes], 1.0, -1.0).sum(0)
    second = jnp.where(up[:, heads] == up[:, tails], 1.0, -1.0).sum(0)
    return first, second


def kernel_moments(
    key: Key[Array, ""],
    first_moment_nodes: Sequence[AbstractNode],
    second_moment_edges: Sequence[tuple[AbstractNode, AbstractNode]],
    program: BlockSamplingProgram,
    schedule: SamplingSchedule,
    init_state: list[Array],
    clamped_data: list[Array],
) -> tuple[Float[Array, " n"], Float[Array, " e"]] | None:
    """`(⟨s_i⟩ [n], ⟨s_i s_j⟩ [e])` over the schedule's samples, spins as ±1, or None where the pairwise
    spin kernels do not run `program` (the caller then runs the observer)."""
    from heatbath.kernels.pairwise_tables import pairwise_kind

    if pairwise_kind(program)[0] != "spin":
        return None
    spec = program.gibbs_spec
    first_ids = spec.node_ids(first_moment_nodes, "moment node")
    pairs = np.asarray([spec.node_ids(edge, "moment edge node") for edge in second_moment_edges], np.int64).reshape(-1, 2)

    def fold(sums, samples: list[Array]):
        """Add a piece's moments, read from every node's state (True: up) at every sample."""
        up = stack_samples(list(samples), list(clamped_data), jnp.bool_)
        first, second = spin_moment_sums(up, first_ids, pairs[:, 0], pairs[:, 1])
        return sums[0] + first, sums[1] + second

    zeros = (jnp.zeros(len(first_ids), jnp.float32), jnp.zeros(len(pairs), jnp.float32))
    folded = fold_kernel_samples(key, program, schedule, init_state, clamped_data, fold, zeros)
    if folded is None:
        return None
    (first, second), _ = folded
    return first / schedule.n_samples, second / schedule.n_samples
