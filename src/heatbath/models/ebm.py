"""Energy-based models: anything with an energy, and EBMs that are sums of factors."""

from __future__ import annotations

import abc
from functools import lru_cache
from operator import itemgetter
from typing import Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from heatbath.block_management import (
    DEFAULT_NODE_SHAPE_DTYPES,
    Block,
    NodeShapeDtypes,
    BlockSpec,
    _State,
    block_state_to_global,
)
from heatbath.errors import HeatbathError
from heatbath.factor import AbstractFactor
from heatbath.pgm import AbstractNode
from heatbath.validation import array_namespace

__all__ = [
    "AbstractEBM",
    "AbstractFactorizedEBM",
    "AbstractPairwiseEBM",
    "FactorizedEBM",
    "EBMFactor",
    "spec_for_blocks",
    "pair_blocks",
    "scaled",
]


class AbstractEBM(eqx.Module):
    """A model with an energy E(x); its distribution is p(x) ∝ exp(-E(x))."""

    @abc.abstractmethod
    def energy(self, state: list[_State], blocks: list[Block]) -> Float[Array, ""]:
        """The energy of one state, given as per-block states for `blocks`."""


class EBMFactor(AbstractFactor):
    """A factor that contributes a term to an EBM's energy."""

    @abc.abstractmethod
    def energy(self, global_state: list[Array], block_spec: BlockSpec) -> Float[Array, ""]:
        """This factor's energy for a global state laid out by `block_spec`."""


@lru_cache(maxsize=128)
def _cached_spec(blocks: tuple[Block, ...], node_shape_dtypes: NodeShapeDtypes) -> BlockSpec:
    return BlockSpec(list(blocks), node_shape_dtypes)


def spec_for_blocks(blocks: Sequence[Block], node_shape_dtypes: Mapping) -> BlockSpec:
    """A `BlockSpec` for `blocks`, built once per distinct layout (energies are called many times per trace)."""
    return _cached_spec(tuple(Block(b) for b in blocks), NodeShapeDtypes(node_shape_dtypes))


class AbstractFactorizedEBM(AbstractEBM):
    """An EBM whose energy is the sum of its factors' energies. Subclasses provide `factors`."""

    node_shape_dtypes: Mapping[type[AbstractNode], PyTree[jax.ShapeDtypeStruct]] = eqx.field(static=True)

    @property
    @abc.abstractmethod
    def factors(self) -> list[EBMFactor]:
        """The factors making up the energy."""

    def energy(self, state: list[_State], blocks: list[Block]) -> Float[Array, ""]:
        spec = spec_for_blocks(blocks, self.node_shape_dtypes)
        global_state = block_state_to_global(list(state), spec)
        total = jnp.zeros((), jnp.float32)
        for factor in self.factors:
            total = total + factor.energy(global_state, spec)
        return total


class FactorizedEBM(AbstractFactorizedEBM):
    """An EBM given by an explicit list of factors."""

    _factors: list[EBMFactor]

    def __init__(
        self,
        factors: Sequence[EBMFactor],
        node_shape_dtypes: Mapping[type[AbstractNode], PyTree[jax.ShapeDtypeStruct]] = DEFAULT_NODE_SHAPE_DTYPES,
    ):
        self._factors = list(factors)
        self.node_shape_dtypes = NodeShapeDtypes(node_shape_dtypes)

    @property
    def factors(self) -> list[EBMFactor]:
        return self._factors


class AbstractPairwiseEBM(AbstractFactorizedEBM):
    """An EBM with one term per node and one per edge (Ising, Potts).

    Nodes and edges are kept as Blocks (static, leafless PyTrees) built once in `__init__`: the
    factors are requested on every program build and energy trace, and a list field of 10^6 nodes
    would be walked by every PyTree operation on the model.
    """

    _node_block: Block = eqx.field(static=True, repr=False)
    _edge_blocks: tuple[Block, ...] = eqx.field(static=True, repr=False)

    @property
    def nodes(self) -> list[AbstractNode]:
        return list(self._node_block.nodes)

    @property
    def edges(self) -> list[tuple[AbstractNode, AbstractNode]]:
        return list(zip(*(b.nodes for b in self._edge_blocks)))


def pair_blocks(edges: Sequence[tuple[AbstractNode, AbstractNode]], owner: str) -> tuple[Block, ...]:
    """Edges as two parallel blocks (first endpoints, second endpoints); () when there are no edges."""
    edges = list(edges)
    if not edges:
        return ()
    if set(map(len, edges)) != {2}:
        raise HeatbathError(f"Every {owner} edge must be a pair of nodes (u, v).")
    return Block(map(itemgetter(0), edges)), Block(map(itemgetter(1), edges))


def scaled(beta, weights):
    """β·W for a factor: on the host when both are concrete (no per-shape kernel compile), traced otherwise."""
    xp = array_namespace(beta, weights)
    return xp.asarray(beta, dtype=weights.dtype) * xp.asarray(weights)
