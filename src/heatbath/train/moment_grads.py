"""Σ_t ∂E/∂θ over a piece of samples from the samples' moments, not autodiff, for discrete models.

The energies of `IsingEBM`, `CategoricalEBM` and of factorised models of discrete factors
(`DiscreteEBMFactor` and its spin and categorical kinds) are linear in their weights. For `IsingEBM`,
E(s) = −β (Σ_i b_i s_i + Σ_e J_e s_{i_e} s_{j_e}) with s = ±1, so over samples s_1 … s_P

    Σ_t ∂E/∂b_i = −β Σ_t s_i,   Σ_t ∂E/∂J_e = −β Σ_t s_{i_e} s_{j_e},   Σ_t ∂E/∂β = −Σ_t (b·s_t + Σ_e J_e s_{i_e} s_{j_e});

for `CategoricalEBM` the same with s_i replaced by the one-hot vector of x_i and s_i s_j by the one-hot
K×K matrix of (x_i, x_j): counts. A discrete factor's energy is −Σ_r s_{r,1}⋯s_{r,M} W_r[c_{r,1}, …],
so Σ_t ∂E/∂W_r[c] = −Σ_t (s_{r,1}⋯s_{r,M})(t) · 1[c_r(t) = c]. In every case Σ_t E is the weights'
dot product with these sums (times β, which scales Ising and Potts weights). The moments are
column sums and comparisons of gathered columns of the `[P, nodes]` samples. Differentiating the
energy once per sample instead was the larger part of a training step on a CPU (THRML's P(14)
example, 30,404 couplings: 2.2 s a gradient as an `IsingEBM`, 1.8 s as a `FactorizedEBM`, 0.9 s
for both with the moments; BENCHMARKS.md). The gradient comes back in the model's own PyTree
structure, as `gradients.energy_grad` gives it.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

from heatbath.block_management import Block
from heatbath.models.categorical import CategoricalEBM
from heatbath.models.discrete_ebm import DiscreteEBMFactor
from heatbath.models.ebm import AbstractEBM, FactorizedEBM
from heatbath.models.ising import IsingEBM
from heatbath.models.spin_moments import differing_samples, pack_samples, spin_moment_sums, stack_samples

__all__ = ["moment_grad_sums"]

GradSums = Callable[[list[Array], list[Array]], tuple[PyTree, Float[Array, ""]]]


def _category_moments(x: Array, nodes: np.ndarray, heads: np.ndarray, tails: np.ndarray, k: int) -> tuple[Array, Array]:
    """(counts of x_i = a [n, K], counts of (x_i, x_j) = (a, b) [e, K, K]) over the `[P, N]` samples.
    Pair counts come 32 samples at a time: each category's indicator packed into bits (`pack_samples`),
    then popcount(head's bits for a & tail's bits for b), K² · P / 32 words a pair instead of P · K²
    comparisons."""
    count, n_all = x.shape
    one_hot = x[:, :, None] == jnp.arange(k, dtype=x.dtype)  # [P, N, K]
    planes = pack_samples(one_hot.reshape(count, n_all * k)).reshape(-1, n_all, k)  # [W, N, K]
    first = jax.lax.population_count(planes[:, nodes, :]).sum(0, dtype=jnp.int32)  # not a sum over P: slow on XLA:CPU
    both = planes[:, heads, :, None] & planes[:, tails, None, :]  # [W, e, K, K]
    return first.astype(jnp.float32), jax.lax.population_count(both).sum(0, dtype=jnp.int32).astype(jnp.float32)


def moment_grad_sums(ebm: AbstractEBM, blocks: Sequence[Block]) -> GradSums | None:
    """`sums(samples, clamped) -> (Σ_t ∂E/∂θ, Σ_t E)` for an `IsingEBM`, a `CategoricalEBM` or a
    `FactorizedEBM` of discrete factors (exactly those classes, and factors that keep
    `DiscreteEBMFactor`'s energy: a subclass may change the energy) whose nodes `blocks` (free, then
    clamped) hold once each; else None. `samples[b]` is `[P, n_b]` for the free blocks, `clamped[c]`
    `[n_c]`, in the nodes' storage dtypes (bool spins, unsigned categories)."""
    if type(ebm) in (IsingEBM, CategoricalEBM):
        return _pairwise_sums(ebm, blocks)
    if type(ebm) is FactorizedEBM and all(isinstance(f, DiscreteEBMFactor) and type(f).energy is DiscreteEBMFactor.energy
                                          for f in ebm.factors):
        return _factor_sums(ebm, blocks)
    return None


def _columns(blocks: Sequence[Block]) -> dict:
    """Each node's column in the blocks' concatenated samples."""
    return {node: i for i, node in enumerate(n for block in blocks for n in block.nodes)}


def _pairwise_sums(ebm: IsingEBM | CategoricalEBM, blocks: Sequence[Block]) -> GradSums | None:
    nodes = list(ebm._node_block.nodes)
    where = _columns(blocks)
    if len(where) != sum(len(b) for b in blocks) or set(where) != set(nodes):
        return None
    column_of = np.asarray([where[n] for n in nodes], np.int64)
    if ebm._edge_blocks:
        heads = np.asarray([where[n] for n in ebm._edge_blocks[0].nodes], np.int64)
        tails = np.asarray([where[n] for n in ebm._edge_blocks[1].nodes], np.int64)
    else:
        heads = tails = np.zeros((0,), np.int64)
    if type(ebm) is IsingEBM:
        moments, dtype = spin_moment_sums, jnp.bool_
    else:
        def moments(x, *where):
            return _category_moments(x, *where, ebm.n_categories)
        dtype = jnp.int32
    zeros = jax.tree.map(jnp.zeros_like, eqx.filter(ebm, eqx.is_inexact_array))

    def sums(samples: list[Array], clamped: list[Array]) -> tuple[PyTree, Float[Array, ""]]:
        first, second = moments(stack_samples(samples, clamped, dtype), column_of, heads, tails)
        linear = jnp.vdot(ebm.biases, first) + jnp.vdot(ebm.weights, second)  # Σ_t (b·s + J·ss)
        beta = ebm.beta
        grads = eqx.tree_at(lambda m: (m.biases, m.weights, m.beta), zeros, (-beta * first, -beta * second, -linear))
        return grads, (-beta * linear).astype(jnp.float32)

    return sums


def _factor_sums(ebm: FactorizedEBM, blocks: Sequence[Block]) -> GradSums | None:
    where = _columns(blocks)
    if len(where) != sum(len(b) for b in blocks):
        return None
    plans = []
    for factor in ebm.factors:
        groups = list(factor.spin_node_groups) + list(factor.categorical_node_groups)
        if any(n not in where for g in groups for n in g.nodes):
            return None
        spin_columns = [np.asarray([where[n] for n in g.nodes], np.int64) for g in factor.spin_node_groups]
        category_columns = [np.asarray([where[n] for n in g.nodes], np.int64) for g in factor.categorical_node_groups]
        plans.append((spin_columns, category_columns, tuple(np.shape(factor.weights)[1:])))
    zeros = jax.tree.map(jnp.zeros_like, eqx.filter(ebm, eqx.is_inexact_array))

    def factor_grad(x: Array, packed, spin_columns, category_columns, categories: tuple[int, ...]) -> Array:
        """−Σ_t s_1⋯s_M one-hot(c_1, …) `[rows, *categories]` from the `[P, nodes]` samples. The product
        of M spins is +1 where the number of up spins has M's parity, so it reads booleans only; with no
        categories, from the popcounts of the spins' packed bits (`packed`, `spin_moments`)."""
        if not category_columns:
            count = x.shape[0]
            odd = differing_samples(packed(), *spin_columns).astype(jnp.float32)  # samples with an odd number up
            return -(2.0 * odd - count if len(spin_columns) % 2 else count - 2.0 * odd)  # the product is +1 there for odd M
        term = None
        if spin_columns:
            odd = None
            for cols in spin_columns:
                up = x[:, cols] != 0
                odd = up if odd is None else odd ^ up
            term = jnp.where(odd == bool(len(spin_columns) % 2), 1.0, -1.0)
        index = None
        for cols, k in zip(category_columns, categories):
            value = x[:, cols].astype(jnp.int32)
            index = value if index is None else index * k + value
        size = int(np.prod(categories))
        hits = index[:, :, None] == jnp.arange(size)
        counts = hits.sum(0, dtype=jnp.float32) if term is None else jnp.where(hits, term[:, :, None], 0.0).sum(0)
        return -counts.reshape(-1, *categories)

    def sums(samples: list[Array], clamped: list[Array]) -> tuple[PyTree, Float[Array, ""]]:
        x = stack_samples(samples, clamped, jnp.result_type(*samples, *clamped))  # bool, or the categories' dtype
        packed = functools.cache(lambda: pack_samples(x != 0))  # made once, where a factor has spins only
        grads = [factor_grad(x, packed, *plan) for plan in plans]
        energy = sum(jnp.vdot(f.weights, g) for f, g in zip(ebm.factors, grads))  # Σ_t E: linear in W
        out = eqx.tree_at(lambda m: [f.weights for f in m._factors], zeros, grads)
        return out, jnp.asarray(energy, jnp.float32)

    return sums
