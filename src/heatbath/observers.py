"""Observers: what a sampling run records at each sample (raw states, running moment sums, ...)."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int, PyTree

from heatbath.block_management import Block, node_positions, take_nodes
from heatbath.errors import HeatbathError
from heatbath.pgm import AbstractNode

if TYPE_CHECKING:
    from heatbath.block_sampling import BlockSamplingProgram

__all__ = ["AbstractObserver", "StateObserver", "MomentAccumulatorObserver"]


class AbstractObserver(eqx.Module):
    """Inspects the program at each recorded sample, keeping an arbitrary carry between calls."""

    @abc.abstractmethod
    def __call__(
        self,
        program: "BlockSamplingProgram",
        state_free: list[PyTree[Array]],
        state_clamped: list[PyTree[Array]],
        carry: PyTree,
        iteration: Int[Array, ""],
    ) -> tuple[PyTree, PyTree]:
        """Return `(new carry, observation)`; observations are stacked over samples by the sampler."""

    def init(self) -> PyTree:
        """The carry before the first observation (None by default)."""
        return None


def _read_nodes(program: "BlockSamplingProgram", state_free, state_clamped, blocks: Sequence[Block]):
    """States of arbitrary `blocks` of the program, read straight from the per-block states."""
    spec = program.gibbs_spec
    states = list(state_free) + list(state_clamped)
    out = []
    for block in blocks:
        ids = spec.node_ids(Block(block).nodes, what="Observed node")
        owner = spec._node_block[ids]
        if np.all(owner == owner[0]):
            b = int(owner[0])
            start = int(spec.block_offsets[b])
            local = spec.node_position[ids] - start
            out.append(jax.tree.map(lambda leaf: take_nodes(leaf, local), states[b]))
        else:
            # Nodes spread over several blocks: gather from the concatenated entry of their structure.
            sd, pos = node_positions(Block(block), spec)
            members = spec.block_to_global_slice_spec[sd]
            entry = jax.tree.map(lambda *leaves: jnp.concatenate(leaves, axis=0), *[states[b] for b in members])
            out.append(jax.tree.map(lambda leaf: take_nodes(leaf, pos), entry))
    return out


class StateObserver(AbstractObserver):
    """Records the raw state of `blocks_to_sample` at every sample."""

    blocks_to_sample: list[Block]

    def __init__(self, blocks_to_sample: Sequence[Block]):
        self.blocks_to_sample = [Block(b) for b in blocks_to_sample]

    def __call__(self, program, state_free, state_clamped, carry, iteration):
        return carry, _read_nodes(program, state_free, state_clamped, self.blocks_to_sample)


def _identity_transform(state, blocks):
    return state


class MomentAccumulatorObserver(AbstractObserver):
    r"""Accumulates running sums $\sum_t f(x_1^t) \cdots f(x_N^t)$ for lists of node tuples (not divided by the count).

    `moment_spec[m]` is a list of equally long node tuples (one moment type, e.g. all pairs);
    the carry is a list with one float32 array per moment type. `f_transform(states, blocks)` maps
    the observed block states before multiplying (e.g. bool spins to ±1).
    """

    blocks_to_sample: list[Block]
    flat_nodes_list: list[AbstractNode] = eqx.field(static=True)
    flat_to_type_slices_list: list[np.ndarray]
    flat_to_full_moment_slices: list[np.ndarray]
    f_transform: Callable = eqx.field(static=True)

    def __init__(self, moment_spec: Sequence[Sequence[Sequence[AbstractNode]]], f_transform: Callable = _identity_transform):
        flat_index: dict[AbstractNode, int] = {}
        slices = []
        for m, moments in enumerate(moment_spec):
            moments = [tuple(nodes) for nodes in moments]
            if not moments:
                raise HeatbathError(f"Moment type {m} is empty; give at least one node tuple per moment type.")
            order = len(moments[0])
            if any(len(nodes) != order for nodes in moments):
                raise HeatbathError(f"All moments of type {m} must involve the same number of nodes ({order}).")
            for nodes in moments:
                for node in nodes:
                    flat_index.setdefault(node, len(flat_index))
            slices.append(np.array([[flat_index[n] for n in nodes] for nodes in moments], dtype=np.int64).reshape(len(moments), order))
        flat_nodes = list(flat_index)
        by_type: dict[type, list[int]] = {}
        for i, node in enumerate(flat_nodes):
            by_type.setdefault(type(node), []).append(i)
        self.flat_nodes_list = flat_nodes
        self.blocks_to_sample = [Block([flat_nodes[i] for i in idx]) for idx in by_type.values()]
        self.flat_to_type_slices_list = [np.array(idx, dtype=np.int64) for idx in by_type.values()]
        self.flat_to_full_moment_slices = slices
        self.f_transform = f_transform

    def init(self) -> list[Array]:
        return [jnp.zeros(s.shape[0], jnp.float32) for s in self.flat_to_full_moment_slices]

    def __call__(self, program, state_free, state_clamped, carry, iteration):
        states = _read_nodes(program, state_free, state_clamped, self.blocks_to_sample)
        states = list(self.f_transform(states, self.blocks_to_sample))
        flat = jnp.zeros(len(self.flat_nodes_list), jnp.float32)
        for idx, state in zip(self.flat_to_type_slices_list, states):
            flat = flat.at[idx].set(jnp.asarray(state).astype(jnp.float32))
        new = [c + jnp.prod(flat[s], axis=1).astype(c.dtype) for c, s in zip(carry, self.flat_to_full_moment_slices)]
        return new, None
