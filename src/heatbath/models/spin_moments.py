"""Spin moments ⟨s_i⟩ and ⟨s_i s_j⟩ of one chain through the sampling kernels.

`estimate_moments` (and so `estimate_kl_grad`, the training gradient) accumulates moments with an
observer, which runs the generic sweep loop. For programs the pairwise spin kernels run (Ising models
and Boltzmann machines with the built-in conditional), this module samples the free blocks with
`sample_states` instead, whose kernels also serve `jax.vmap` over chains and data rows as one call,
and sums the moments from those samples. The clamped nodes' values are known, so they are not
sampled: a moment that involves one reads it from the clamped state.

Samples are held a piece at a time (at most PIECE_ELEMENTS sampled spins per chain): each piece
starts from the previous piece's last state, so the pieces make up one chain with the schedule's
sweeps between samples, as the observer's single run does.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Key

from heatbath.block_management import Block
from heatbath.block_sampling import BlockSamplingProgram, SamplingSchedule, sample_states
from heatbath.pgm import AbstractNode

__all__ = ["kernel_moments"]

PIECE_ELEMENTS = 1 << 16  # sampled free spins held per chain at a time (64 KiB of booleans)


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

    if pairwise_kind(program)[0] != "spin" or schedule.n_samples < 1:
        return None
    spec = program.gibbs_spec
    first_ids = spec.node_ids(first_moment_nodes, "moment node")
    pairs = np.asarray([spec.node_ids(edge, "moment edge node") for edge in second_moment_edges], np.int64).reshape(-1, 2)
    free_blocks = [Block(b) for b in spec.free_blocks]
    def spins_up(free_samples: list[Array]) -> Array:
        """Every node's state (True: up) at every sample of a piece `[P, N]`: the free blocks sampled,
        the clamped ones repeated."""
        count = free_samples[0].shape[0]
        clamped = [jnp.broadcast_to(jnp.asarray(c, bool), (count,) + jnp.shape(c)) for c in clamped_data]
        return jnp.concatenate(list(free_samples) + clamped, axis=1)

    def piece(key, state, n_warmup: int, count: int):
        """`count` samples after `n_warmup` sweeps from `state`: (moment sums, the last free state).
        s_i s_j is +1 where the two states agree, so the sums read booleans only."""
        samples = sample_states(key, program, SamplingSchedule(n_warmup, count, schedule.steps_per_sample),
                                state, clamped_data, free_blocks)
        up = spins_up(samples)
        first = jnp.where(up[:, first_ids], 1.0, -1.0).sum(0)
        second = jnp.where(up[:, pairs[:, 0]] == up[:, pairs[:, 1]], 1.0, -1.0).sum(0)
        return (first, second), [x[-1] for x in samples]

    n_free = max(1, sum(len(b) for b in free_blocks))
    per_piece = max(1, min(schedule.n_samples, PIECE_ELEMENTS // n_free))
    steps = schedule.steps_per_sample
    key_first, key_rest = jax.random.split(key)
    (first, second), state = piece(key_first, list(init_state), schedule.n_warmup, per_piece)
    full, rest = divmod(schedule.n_samples - per_piece, per_piece)
    if full:
        def body(carry, k):
            (f, s), state = carry
            (df, ds), state = piece(k, state, steps, per_piece)
            return ((f + df, s + ds), state), None

        ((first, second), state), _ = jax.lax.scan(body, ((first, second), state), jax.random.split(key_rest, full))
    if rest:
        (df, ds), state = piece(jax.random.fold_in(key_rest, full), state, steps, rest)
        first, second = first + df, second + ds
    return first / schedule.n_samples, second / schedule.n_samples
