"""`InteractionGroup`: the engine's unit of "who needs whose state, with which parameters"."""

from __future__ import annotations

from typing import Sequence

import equinox as eqx
import jax
import numpy as np
from jaxtyping import PyTree

from heatbath.block_management import Block
from heatbath.errors import HeatbathError

__all__ = ["InteractionGroup"]


class InteractionGroup(eqx.Module):
    """A batch of directed interactions: `head_nodes[i]` is influenced by `tail_nodes[k][i]` for every k.

    **Attributes:**

    - `interaction`: a PyTree of parameters; every array has leading dimension `len(head_nodes)`, and
      slice i is handed to the sampler of `head_nodes[i]`.
    - `head_nodes`: the nodes whose conditional update this group affects.
    - `tail_nodes`: blocks parallel to `head_nodes` whose states the update needs.
    """

    interaction: PyTree
    head_nodes: Block
    tail_nodes: list[Block]

    def __init__(self, interaction: PyTree, head_nodes: Block, tail_nodes: Sequence[Block]):
        head_nodes = Block(head_nodes)
        tail_nodes = [Block(t) for t in tail_nodes]
        n = len(head_nodes)
        for k, tail in enumerate(tail_nodes):
            if len(tail) != n:
                raise HeatbathError(
                    f"InteractionGroup tail block {k} has {len(tail)} nodes but there are {n} head nodes; "
                    "tail blocks must be parallel to the head block (same length)."
                )
        for leaf in jax.tree.leaves(interaction):
            shape = np.shape(leaf)
            if len(shape) == 0 or shape[0] != n:
                raise HeatbathError(
                    f"Every array in an InteractionGroup's interaction must have leading dimension "
                    f"len(head_nodes) = {n}; got an array of shape {tuple(shape)}."
                )
        self.interaction = interaction
        self.head_nodes = head_nodes
        self.tail_nodes = tail_nodes
