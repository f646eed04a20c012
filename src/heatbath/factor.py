"""Factors: the user's language for undirected interactions; each compiles to `InteractionGroup`s."""

from __future__ import annotations

import abc
from typing import Sequence

import equinox as eqx
import numpy as np
from jaxtyping import Array

from heatbath.block_management import Block
from heatbath.errors import HeatbathError
from heatbath.interaction import InteractionGroup
from heatbath.validation import check_finite

__all__ = ["AbstractFactor", "WeightedFactor", "FactorSamplingProgram"]


class AbstractFactor(eqx.Module):
    """A batch of undirected interactions: factor i joins `node_groups[k][i]` for every k.

    Subclasses implement `to_interaction_groups`, saying how the factor affects the conditional update
    of each node it touches.
    """

    node_groups: list[Block]

    def __init__(self, node_groups: Sequence[Block]):
        node_groups = [Block(g) for g in node_groups]
        if node_groups:
            n = len(node_groups[0])
            for k, group in enumerate(node_groups):
                if len(group) != n:
                    raise HeatbathError(
                        f"Factor node group {k} has {len(group)} nodes but group 0 has {n}; all node groups of a "
                        "factor must have the same length (one entry per factor in the batch)."
                    )
        self.node_groups = node_groups

    @abc.abstractmethod
    def to_interaction_groups(self) -> list[InteractionGroup]:
        """Compile this factor to directed interactions."""


class WeightedFactor(AbstractFactor):
    """A factor parameterised by a weight tensor whose leading dimension is the factor batch size."""

    weights: Array

    def __init__(self, weights: Array, node_groups: Sequence[Block]):
        super().__init__(node_groups)
        n = len(self.node_groups[0]) if self.node_groups else None
        if np.ndim(weights) == 0 or (n is not None and np.shape(weights)[0] != n):
            raise HeatbathError(
                f"{type(self).__name__} weights have shape {tuple(np.shape(weights))}; the leading dimension must "
                f"equal the number of factors, len(node_groups[0]) = {n}."
            )
        check_finite(weights, f"{type(self).__name__} weights")
        self.weights = weights


def __getattr__(name):
    # FactorSamplingProgram lives with the program compiler; re-exported here at THRML's path.
    if name == "FactorSamplingProgram":
        from heatbath.block_sampling import FactorSamplingProgram

        return FactorSamplingProgram
    raise AttributeError(name)
