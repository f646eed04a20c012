"""Σ_t ∂E/∂θ of an Ising or Potts model over a piece of samples, from the samples' moments, not autodiff.

Both energies are linear in their biases and couplings. For `IsingEBM`,
E(s) = −β (Σ_i b_i s_i + Σ_e J_e s_{i_e} s_{j_e}) with s = ±1, so over samples s_1 … s_P

    Σ_t ∂E/∂b_i = −β Σ_t s_i,   Σ_t ∂E/∂J_e = −β Σ_t s_{i_e} s_{j_e},   Σ_t ∂E/∂β = −Σ_t (b·s_t + Σ_e J_e s_{i_e} s_{j_e});

for `CategoricalEBM`, E(x) = −β (Σ_i b_i[x_i] + Σ_e W_e[x_{i_e}, x_{j_e}]), the same with s_i replaced by
the one-hot vector of x_i and s_i s_j by the one-hot K×K matrix of (x_i, x_j): counts. And
Σ_t E = β · Σ_t ∂E/∂β. The moments are column sums and comparisons of gathered columns of the
`[P, nodes]` samples. Differentiating the energy once per sample instead was the larger part of a
training step on a CPU (THRML's P(14) example, 30,404 couplings: 2.2 s a gradient, 0.9 s with the
moments; BENCHMARKS.md). The gradient comes back in the model's own PyTree structure, as
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
from heatbath.models.categorical import CategoricalEBM
from heatbath.models.ebm import AbstractEBM
from heatbath.models.ising import IsingEBM

__all__ = ["pairwise_grad_sums"]

GradSums = Callable[[list[Array], list[Array]], tuple[PyTree, Float[Array, ""]]]


def _spin_moments(up: Array, nodes: np.ndarray, heads: np.ndarray, tails: np.ndarray) -> tuple[Array, Array]:
    """(Σ_t s_i [n], Σ_t s_i s_j [e]) from booleans (True: +1): s_i s_j = +1 where two states agree."""
    first = jnp.where(up[:, nodes], 1.0, -1.0).sum(0)
    second = jnp.where(up[:, heads] == up[:, tails], 1.0, -1.0).sum(0)
    return first, second


def _category_moments(x: Array, nodes: np.ndarray, heads: np.ndarray, tails: np.ndarray, k: int) -> tuple[Array, Array]:
    """(counts of x_i = a [n, K], counts of (x_i, x_j) = (a, b) [e, K, K]): a reduction over the samples
    of a comparison, which XLA fuses without making the one-hot arrays."""
    x = x.astype(jnp.int32)
    first = (x[:, nodes, None] == jnp.arange(k)).sum(0, dtype=jnp.float32)
    pair = x[:, heads] * k + x[:, tails]
    second = (pair[:, :, None] == jnp.arange(k * k)).sum(0, dtype=jnp.float32).reshape(-1, k, k)
    return first, second


def pairwise_grad_sums(ebm: AbstractEBM, blocks: Sequence[Block]) -> GradSums | None:
    """`sums(samples, clamped) -> (Σ_t ∂E/∂θ, Σ_t E)` for an `IsingEBM` or `CategoricalEBM` (exactly
    those classes: a subclass may change the energy) whose nodes `blocks` (free, then clamped) hold
    once each, else None. `samples[b]` is `[P, n_b]` for the free blocks, `clamped[c]` `[n_c]`, in
    the nodes' storage dtype (bool spins, unsigned categories)."""
    if type(ebm) not in (IsingEBM, CategoricalEBM):
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
    if type(ebm) is IsingEBM:
        moments = _spin_moments
    else:
        def moments(x, *where):
            return _category_moments(x, *where, ebm.n_categories)
    zeros = jax.tree.map(jnp.zeros_like, eqx.filter(ebm, eqx.is_inexact_array))

    def sums(samples: list[Array], clamped: list[Array]) -> tuple[PyTree, Float[Array, ""]]:
        count = samples[0].shape[0]
        dtype = samples[0].dtype
        x = jnp.concatenate(list(samples) + [jnp.broadcast_to(jnp.asarray(c, dtype), (count, c.shape[-1]))
                                             for c in clamped], axis=1)  # [P, nodes], the blocks' order
        first, second = moments(x, column_of, heads, tails)
        linear = jnp.vdot(ebm.biases, first) + jnp.vdot(ebm.weights, second)  # Σ_t (b·s + J·ss)
        beta = ebm.beta
        grads = eqx.tree_at(lambda m: (m.biases, m.weights, m.beta), zeros, (-beta * first, -beta * second, -linear))
        return grads, (-beta * linear).astype(jnp.float32)

    return sums
