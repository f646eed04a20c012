"""Training diagnostics: pseudo-log-likelihood of fully observed discrete data, and exact KL(data ‖ model).

Both are written in jax.numpy over the (possibly traced) model, so they run inside a jitted training
step and are differentiable; the enumeration tables are numpy, built once.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from heatbath.block_management import Block
from heatbath.exact.enumeration import _all_states
from heatbath.models.ebm import AbstractEBM
from heatbath.train.spec import TrainingSpec, _node_dtype, _state_count

__all__ = ["pseudo_log_likelihood", "ExactKL", "exact_kl_table", "exact_kl"]


def pseudo_log_likelihood(
    ebm: AbstractEBM,
    blocks: Sequence[Block],
    states: Sequence[Array],
    n_states: Sequence[int],
    clamped_blocks: Sequence[Block] = (),
    clamped_state: Sequence[Array] = (),
) -> Float[Array, ""]:
    r"""Average over rows of $\sum_i \log p(x_i \mid x_{-i})$ for discrete `states` (one [batch, nodes] array per block).

    Each conditional is computed exactly from energies with node i set to each of its `n_states` values.
    """
    blocks, clamped = [Block(b) for b in blocks], list(clamped_state)
    all_blocks = blocks + [Block(b) for b in clamped_blocks]

    def row_pll(row):
        total = jnp.zeros((), jnp.float32)
        for b, (x, k) in enumerate(zip(row, n_states)):
            values = jnp.arange(k).astype(x.dtype) if x.dtype != jnp.bool_ else jnp.array([False, True])

            def energy_with(i, v, b=b, x=x):
                changed = row[:b] + [x.at[i].set(v)] + row[b + 1 :]
                return ebm.energy(changed + clamped, all_blocks)

            nodes = jnp.arange(x.shape[0])
            energies = jax.vmap(jax.vmap(energy_with, (None, 0)), (0, None))(nodes, values)  # [n, K]
            own = energies[nodes, x.astype(jnp.int32)]
            total = total + jnp.sum(-own - jax.nn.logsumexp(-energies, axis=1))
        return total

    return jnp.mean(jax.vmap(lambda *row: row_pll(list(row)))(*states))


class ExactKL(NamedTuple):
    """Enumeration tables for KL(data ‖ model) of a model whose free nodes are `blocks` (data blocks first).

    `states[b]` [S, nodes] lists every joint state; the first `n_visible` joint values of the data
    nodes times `n_hidden` values of the latent nodes, in row-major order. `data_probs` [n_visible]
    is the empirical distribution of the data.
    """

    blocks: list[Block]
    states: list[np.ndarray]
    n_visible: int
    n_hidden: int
    data_probs: np.ndarray
    clamped_blocks: list[Block]


def exact_kl_table(spec: TrainingSpec, data: Sequence[Array], max_states: int = 1 << 16) -> ExactKL | None:
    """Tables for `exact_kl`, or None when the model has continuous nodes or more than `max_states` joint states."""
    ebm = spec.ebm
    visible = list(spec.data_blocks)
    observed = {n for b in visible for n in b.nodes}
    hidden = [b for b in spec.positive_free_blocks if not observed.intersection(b.nodes)]
    negative_nodes = {n for b in spec.negative_free_blocks for n in b.nodes}
    if negative_nodes != observed | {n for b in hidden for n in b.nodes}:
        return None
    blocks = visible + hidden
    counts = [_state_count(ebm, b, strict=False) for b in blocks]
    if any(c is None for c in counts):
        return None
    sizes = [c for b, c in zip(blocks, counts) for _ in range(len(b))]
    if float(np.prod([float(s) for s in sizes])) > max_states:
        return None
    dtypes = [_node_dtype(ebm, b) for b in blocks]
    states = _all_states(blocks, counts, dtypes)
    n_vis_nodes = sum(len(b) for b in visible)
    n_visible = int(np.prod(sizes[:n_vis_nodes]))
    n_hidden = int(np.prod(sizes[n_vis_nodes:]))
    cols = np.concatenate([np.asarray(d).astype(np.int64).reshape(np.shape(d)[0], -1) for d in data], axis=1)
    index = np.ravel_multi_index(cols.T, sizes[:n_vis_nodes])
    probs = np.bincount(index, minlength=n_visible) / len(index)
    return ExactKL(blocks, states, n_visible, n_hidden, probs, list(spec.conditioning_blocks))


def exact_kl(ebm: AbstractEBM, table: ExactKL, conditioning_values: Sequence[Array] = ()) -> Float[Array, ""]:
    r"""KL(data ‖ model) = Σ_v p̂(v) [log p̂(v) − log p(v)] with p(v) the model's exact marginal (conditional on the conditioning)."""
    blocks = table.blocks + table.clamped_blocks
    cond = [jnp.asarray(c) for c in conditioning_values]
    energies = jax.vmap(lambda *s: ebm.energy(list(s) + cond, blocks))(*[jnp.asarray(s) for s in table.states])
    neg = -energies.astype(jnp.float32)
    log_z = jax.nn.logsumexp(neg)
    log_p_visible = jax.nn.logsumexp(neg.reshape(table.n_visible, table.n_hidden), axis=1) - log_z
    p = jnp.asarray(table.data_probs, jnp.float32)
    seen = p > 0
    entropy_term = jnp.sum(jnp.where(seen, p * jnp.log(jnp.where(seen, p, 1.0)), 0.0))
    return entropy_term - jnp.sum(jnp.where(seen, p * log_p_visible, 0.0))
