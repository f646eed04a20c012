"""Exact distributions of small discrete models by enumerating every joint state.

Used as the ground truth that samplers are tested against: probabilities, log partition function,
marginals and moments, exactly (up to float64 rounding of the energies), optionally conditioned on
clamped nodes. Intended for up to about 2^20 joint states.
"""

from __future__ import annotations

from typing import Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from heatbath.block_management import Block, lookup_node_sd
from heatbath.errors import HeatbathError
from heatbath.models.discrete_ebm import DiscreteEBMFactor
from heatbath.models.ebm import AbstractEBM

__all__ = [
    "ExactDistribution",
    "MAX_ENUMERATED_STATES",
    "exact_distribution",
    "log_partition_function",
    "infer_state_counts",
    "marginals",
    "expectation",
    "spin_moments",
]

MAX_ENUMERATED_STATES = 1 << 22


class ExactDistribution(NamedTuple):
    """Every joint state of `blocks` with its probability.

    `states[b]` has shape [S, len(blocks[b])] (the block's dtype); `log_probs` [S] sums (in exp) to 1;
    `log_z` is the log partition function of the (conditional) distribution; `n_states[b]` is the
    number of values each node of block b takes. `clamped_blocks` / `clamped_states` record what the
    distribution is conditioned on (those nodes are constant in every state).
    """

    blocks: list[Block]
    states: list[np.ndarray]
    log_probs: np.ndarray
    log_z: float
    n_states: list[int]
    clamped_blocks: Sequence[Block] = ()
    clamped_states: Sequence[np.ndarray] = ()

    @property
    def probs(self) -> np.ndarray:
        return np.exp(self.log_probs)


def infer_state_counts(ebm: AbstractEBM, blocks: Sequence[Block], overrides: Mapping[type, int] | None = None) -> list[int]:
    """How many values each block's nodes take: 2 for bool (spin) nodes, K for categorical nodes.

    K comes from `overrides[node_type]`, the nodes' `num_states`, or the size of the weight axes
    that index them in the model's discrete factors (the smallest such size).
    """
    overrides = dict(overrides or {})
    factor_sizes: dict = {}
    for factor in getattr(ebm, "factors", []):
        if isinstance(factor, DiscreteEBMFactor):
            for q, group in enumerate(factor.categorical_node_groups):
                size = int(np.shape(factor.weights)[1 + q])
                for node in group.nodes:
                    factor_sizes[node] = min(size, factor_sizes.get(node, size))
    counts = []
    for block in blocks:
        block = Block(block)
        node_type = block.node_type
        if node_type in overrides:
            counts.append(int(overrides[node_type]))
            continue
        sd = lookup_node_sd(node_type, ebm.node_shape_dtypes)
        dtype = np.dtype(jax.tree.leaves(sd)[0].dtype)
        if dtype == np.bool_:
            counts.append(2)
            continue
        sizes = {getattr(n, "num_states", None) or factor_sizes.get(n) for n in block.nodes}
        if None in sizes or len(sizes) != 1:
            raise HeatbathError(
                f"Cannot tell how many values the {node_type.__name__} nodes of block {block!r} take "
                f"(found {sizes}); pass n_states={{{node_type.__name__}: K}}."
            )
        counts.append(sizes.pop())
    return counts


def _all_states(blocks: Sequence[Block], counts: Sequence[int], dtypes) -> list[np.ndarray]:
    sizes = [c for block, c in zip(blocks, counts) for _ in range(len(block))]
    total = int(np.prod([float(s) for s in sizes])) if sizes else 1
    if total > MAX_ENUMERATED_STATES:
        raise HeatbathError(
            f"Enumerating {total:.3g} joint states is too many (limit {MAX_ENUMERATED_STATES}); use a model with fewer "
            "free variables, or clamp some."
        )
    grid = np.indices(sizes, dtype=np.int64).reshape(len(sizes), -1).T if sizes else np.zeros((1, 0), np.int64)
    out, start = [], 0
    for block, dtype in zip(blocks, dtypes):
        cols = grid[:, start : start + len(block)]
        out.append(cols.astype(bool) if dtype == np.bool_ else cols.astype(dtype))
        start += len(block)
    return out


def _energies(ebm: AbstractEBM, blocks, states, clamped_blocks, clamped_state, chunk: int = 1 << 15) -> np.ndarray:
    all_blocks = list(blocks) + list(clamped_blocks)

    @jax.jit
    def batch_energy(batch):
        return jax.vmap(lambda s: ebm.energy(list(s) + list(clamped_state), all_blocks))(batch)

    n = states[0].shape[0] if states else 1
    pieces = []
    for start in range(0, n, chunk):
        batch = [jnp.asarray(s[start : start + chunk]) for s in states]
        if start + chunk > n and n > chunk:  # pad the last chunk to keep one compiled shape
            pad = start + chunk - n
            batch = [jnp.concatenate([b, jnp.repeat(b[:1], pad, axis=0)]) for b in batch]
            pieces.append(np.asarray(batch_energy(batch), np.float64)[: chunk - pad])
        else:
            pieces.append(np.asarray(batch_energy(batch), np.float64))
    return np.concatenate(pieces)


def exact_distribution(
    ebm: AbstractEBM,
    blocks: Sequence[Block],
    *,
    clamped_blocks: Sequence[Block] = (),
    clamped_state: Sequence[Array] = (),
    n_states: Mapping[type, int] | None = None,
) -> ExactDistribution:
    """The exact distribution of the nodes in `blocks`, conditioned on `clamped_state` for `clamped_blocks`."""
    blocks = [Block(b) for b in blocks]
    clamped_blocks = [Block(b) for b in clamped_blocks]
    if len(clamped_state) != len(clamped_blocks):
        raise HeatbathError("Give one clamped state per clamped block.")
    counts = infer_state_counts(ebm, blocks, n_states)
    dtypes = [np.dtype(jax.tree.leaves(lookup_node_sd(b.node_type, ebm.node_shape_dtypes))[0].dtype) for b in blocks]
    states = _all_states(blocks, counts, dtypes)
    energies = _energies(ebm, blocks, states, clamped_blocks, [jnp.asarray(c) for c in clamped_state])
    if not np.all(np.isfinite(energies)):
        raise HeatbathError("The model's energy is not finite for some states; check the weights for NaN/inf.")
    neg = -energies
    shift = neg.max()
    log_z = float(shift + np.log(np.sum(np.exp(neg - shift))))
    clamped_np = [np.asarray(c) for c in clamped_state]
    return ExactDistribution(blocks, states, neg - log_z, log_z, counts, clamped_blocks, clamped_np)


def log_partition_function(ebm: AbstractEBM, blocks: Sequence[Block], **kwargs) -> float:
    """ln Z = ln Σ_x exp(-E(x)) over every joint state of `blocks` (see `exact_distribution` for options)."""
    return exact_distribution(ebm, blocks, **kwargs).log_z


def marginals(dist: ExactDistribution) -> list[np.ndarray]:
    """Single-node marginals: for each block an array [len(block), K] of P(x_i = value)."""
    p = dist.probs
    out = []
    for states, k in zip(dist.states, dist.n_states):
        values = states.astype(np.int64)
        out.append(np.stack([(p[:, None] * (values == v)).sum(0) for v in range(k)], axis=1))
    return out


def expectation(dist: ExactDistribution, fn: Callable[[list[np.ndarray]], np.ndarray]) -> np.ndarray:
    """E[fn(x)] where `fn` maps the list of per-block state arrays [S, n] to values [S, ...]."""
    values = np.asarray(fn(dist.states), np.float64)
    return np.tensordot(dist.probs, values, axes=(0, 0))


def spin_moments(dist: ExactDistribution, nodes, edges) -> tuple[Float[np.ndarray, " n"], Float[np.ndarray, " e"]]:
    """Exact ⟨s_i⟩ and ⟨s_i s_j⟩ (spins as ±1) for the given nodes and node pairs."""
    n = dist.log_probs.size
    columns = {}
    for block, states in zip(dist.blocks, dist.states):
        for i, node in enumerate(block.nodes):
            columns[node] = states[:, i]
    for block, state in zip(dist.clamped_blocks, dist.clamped_states):
        for i, node in enumerate(block.nodes):
            columns[node] = np.broadcast_to(state[i], (n,))

    def spin(node):
        if node not in columns:
            raise HeatbathError(f"Node {node!r} is neither enumerated nor clamped in this distribution.")
        return np.where(columns[node].astype(bool), 1.0, -1.0)

    p = dist.probs
    first = np.array([p @ spin(n) for n in nodes])
    second = np.array([p @ (spin(u) * spin(v)) for u, v in edges])
    return first, second
