"""Σ_t ∂E/∂θ of an Ising model over a piece of samples, from the samples' moments instead of autodiff.

E(s) = −β (Σ_i b_i s_i + Σ_e J_e s_{i_e} s_{j_e}) is linear in b and J, so over samples s_1 … s_P

    Σ_t ∂E/∂b_i = −β Σ_t s_i,   Σ_t ∂E/∂J_e = −β Σ_t s_{i_e} s_{j_e},   Σ_t ∂E/∂β = −Σ_t (b·s_t + Σ_e J_e s_{i_e} s_{j_e}),

and Σ_t E(s_t) = β · (the last sum): a column sum and a comparison of two gathered columns of the
`[P, nodes]` boolean samples. Differentiating the energy once per sample instead was the larger part
of a training step on a CPU (THRML's P(14) example, 30,404 couplings: 2.2 s a gradient, 0.9 s with
the moments; BENCHMARKS.md). The gradient comes back in the model's own PyTree structure, as
`gradients.energy_grad` gives it.
"""

from __future__ import annotations

from typing import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

from heatbath.block_management import Block
from heatbath.models.ebm import AbstractEBM
from heatbath.models.ising import IsingEBM

__all__ = ["ising_grad_sums"]

GradSums = Callable[[list[Array], list[Array]], tuple[PyTree, Float[Array, ""]]]


def ising_grad_sums(ebm: AbstractEBM, blocks: Sequence[Block]) -> GradSums | None:
    """`sums(samples, clamped) -> (Σ_t ∂E/∂θ, Σ_t E)` for an `IsingEBM` (exactly that class: a
    subclass may change the energy) whose nodes `blocks` (free, then clamped) hold once each, else
    None. `samples[b]` is `[P, n_b]` (bool spins) for the free blocks, `clamped[c]` `[n_c]`."""
    if type(ebm) is not IsingEBM:
        return None
    nodes = list(ebm._node_block.nodes)
    index = {node: i for i, node in enumerate(nodes)}
    columns = [index.get(node, -1) for block in blocks for node in block.nodes]
    if sorted(columns) != list(range(len(nodes))):
        return None
    column_of = np.argsort(np.asarray(columns, np.int64))  # model node i -> its column in the blocks
    if ebm._edge_blocks:
        heads = column_of[[index[n] for n in ebm._edge_blocks[0].nodes]]
        tails = column_of[[index[n] for n in ebm._edge_blocks[1].nodes]]
    else:
        heads = tails = np.zeros((0,), np.int64)
    zeros = jax.tree.map(jnp.zeros_like, eqx.filter(ebm, eqx.is_inexact_array))

    def sums(samples: list[Array], clamped: list[Array]) -> tuple[PyTree, Float[Array, ""]]:
        """Sums read booleans only (as `models.spin_moments`): s_i s_j = +1 where two states agree."""
        count = samples[0].shape[0]
        up = jnp.concatenate(list(samples) + [jnp.broadcast_to(jnp.asarray(c, bool), (count, c.shape[-1]))
                                              for c in clamped], axis=1)  # [P, nodes], the blocks' order
        first = jnp.where(up[:, column_of], 1.0, -1.0).sum(0)
        second = jnp.where(up[:, heads] == up[:, tails], 1.0, -1.0).sum(0)
        linear = jnp.dot(ebm.biases, first) + jnp.dot(ebm.weights, second)  # Σ_t (b·s + J·ss)
        beta = ebm.beta
        grads = eqx.tree_at(lambda m: (m.biases, m.weights, m.beta), zeros,
                            (-beta * first, -beta * second, -linear))
        return grads, (-beta * linear).astype(jnp.float32)

    return sums
