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

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int32, Key, UInt32

from heatbath.block_sampling import BlockSamplingProgram, SamplingSchedule
from heatbath.kernels.pieces import fold_kernel_samples
from heatbath.pgm import AbstractNode

__all__ = ["kernel_moments", "moment_fold", "stack_samples", "spin_moment_sums", "pack_samples", "differing_samples"]


def stack_samples(samples: list[Array], clamped: list[Array], dtype) -> Array:
    """`[P, nodes]` in the blocks' order: the free blocks' samples `[P, n_b]`, then the clamped blocks'
    values `[n_c]` repeated for every sample, all as `dtype`."""
    count = samples[0].shape[0]
    repeated = [jnp.broadcast_to(jnp.asarray(c).astype(dtype), (count,) + jnp.shape(c)) for c in clamped]
    return jnp.concatenate([s.astype(dtype) for s in samples] + repeated, axis=1)


def pack_samples(up: Bool[Array, "P N"]) -> UInt32[Array, "W N"]:
    """The `[P, N]` booleans as bits, 32 samples a word: `[ceil(P / 32), N]`, padding bits 0."""
    count = up.shape[0]
    words = -(-count // 32)
    bits = jnp.pad(up, ((0, 32 * words - count), (0, 0))).reshape(words, 32, up.shape[1]).astype(jnp.uint32)
    return (bits << jnp.arange(32, dtype=jnp.uint32)[None, :, None]).sum(1, dtype=jnp.uint32)  # distinct bits: OR


def differing_samples(packed: UInt32[Array, "W N"], *columns) -> Int32[Array, " e"]:
    """For each row of `columns` (each `[e]`, columns of `pack_samples`' output), in how many samples
    an odd number of those columns are True: the popcount of their words' xor."""
    odd = packed[:, columns[0]]
    for cols in columns[1:]:
        odd = odd ^ packed[:, cols]
    return jax.lax.population_count(odd).astype(jnp.int32).sum(0)


def spin_moment_sums(up: Bool[Array, "P N"], nodes, heads, tails) -> tuple[Float[Array, " n"], Float[Array, " e"]]:
    """(Σ_t s_i over `nodes`, Σ_t s_i s_j over the pairs `heads`, `tails`) from the `[P, nodes]` booleans
    `up` (True: +1). s_i s_j is +1 where two states agree, so Σ_t s_i s_j = P − 2 · (samples where they
    differ), counted 32 samples at a time as the popcount of the xor of packed bits: a pair costs
    P / 32 gathered words instead of P gathered booleans (the moment sums were the larger part of a
    P(14) training gradient after its sampling, on an H200). Σ_t s_i comes from the same words: XLA:CPU
    reduced `up` over its samples at 1.6 ns an element (33 ms a phase of THRML's P(14) example)."""
    count, packed = up.shape[0], pack_samples(up)
    first = 2.0 * differing_samples(packed, nodes).astype(jnp.float32) - count  # one column: its up count
    second = count - 2.0 * differing_samples(packed, heads, tails).astype(jnp.float32)
    return first, second


def moment_fold(first_moment_nodes: Sequence[AbstractNode], second_moment_edges: Sequence[tuple[AbstractNode, AbstractNode]],
                program: BlockSamplingProgram):
    """`(fold, zeros)`: `fold((Σ s_i, Σ s_i s_j), samples, clamped)` adds a piece's moments, read from
    every node's state (True: up) at every sample (`samples[b]` `[P, n_b]` per free block, `clamped`
    the clamped blocks' values); `zeros` the empty sums."""
    spec = program.gibbs_spec
    first_ids = spec.node_ids(first_moment_nodes, "moment node")
    pairs = np.asarray([spec.node_ids(edge, "moment edge node") for edge in second_moment_edges], np.int64).reshape(-1, 2)

    def fold(sums, samples: list[Array], clamped: list[Array]):
        up = stack_samples(list(samples), list(clamped), jnp.bool_)
        first, second = spin_moment_sums(up, first_ids, pairs[:, 0], pairs[:, 1])
        return sums[0] + first, sums[1] + second

    return fold, (jnp.zeros(len(first_ids), jnp.float32), jnp.zeros(len(pairs), jnp.float32))


def kernel_moments(
    key: Key[Array, ""],
    first_moment_nodes: Sequence[AbstractNode],
    second_moment_edges: Sequence[tuple[AbstractNode, AbstractNode]],
    program: BlockSamplingProgram,
    schedule: SamplingSchedule,
    init_state: list[Array],
    clamped_data: list[Array],
    vmapped_chains: int | None = None,
) -> tuple[Float[Array, " n"], Float[Array, " e"]] | None:
    """`(⟨s_i⟩ [n], ⟨s_i s_j⟩ [e])` over the schedule's samples, spins as ±1, or None where the pairwise
    spin kernels do not run `program` (the caller then runs the observer). `vmapped_chains`: how many
    chains the caller vmaps this over, if it knows (`fold_kernel_samples`)."""
    from heatbath.kernels.pairwise_tables import pairwise_kind

    if pairwise_kind(program)[0] != "spin":
        return None
    fold, zeros = moment_fold(first_moment_nodes, second_moment_edges, program)
    folded = fold_kernel_samples(key, program, schedule, init_state, list(clamped_data), fold, zeros, vmapped_chains)
    if folded is None:
        return None
    (first, second), _ = folded
    return first / schedule.n_samples, second / schedule.n_samples
