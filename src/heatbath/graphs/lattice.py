"""Hypercubic lattices (2D, 3D, any dimension) with nearest-neighbour edges and optional periodic wrap.

Lattices are the physicist's standard test bed (the 2D Ising model has Onsager's exact solution) and
the easiest large graphs to benchmark with. Everything except creating the node objects is numpy on
an index grid, so a 1000 × 1000 periodic lattice (10^6 nodes, 2·10^6 edges) builds in about a second.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import numpy as np
from jaxtyping import Int

from heatbath.block_management import Block
from heatbath.errors import HeatbathError
from heatbath.graphs._nodes import make_nodes, object_array, paused_gc, take
from heatbath.graphs.coloring import color_graph
from heatbath.pgm import AbstractNode, SpinNode

__all__ = ["Lattice", "hypercubic_lattice", "lattice_2d", "lattice_3d"]

NodeFactory = Callable[[Hashable], AbstractNode]


@dataclass(frozen=True, eq=False, repr=False)
class Lattice:
    """A lattice graph of heatbath nodes.

    **Attributes:**

    - `nodes`: one node per site in row-major (C) order, each named by its coordinate tuple.
    - `edge_index`: int64 [n_edges, 2] indices into `nodes`; every nearest-neighbour pair once, sorted
      by the first index (for each site, its +1 neighbour along axis 0, then axis 1, ...).
    - `edges`: the same edges as `(node, node)` pairs, ready for `IsingEBM(nodes, edges, ...)`.
    - `coords`: int64 [n_nodes, ndim], the coordinates of every node.
    - `shape`: the side lengths; `periodic`: whether each axis wraps around.
    """

    nodes: list[AbstractNode]
    edge_index: Int[np.ndarray, "edges 2"]
    edges: list[tuple[AbstractNode, AbstractNode]]
    coords: Int[np.ndarray, "nodes ndim"]
    shape: tuple[int, ...]
    periodic: tuple[bool, ...]

    def __repr__(self) -> str:
        wrap = "periodic" if all(self.periodic) else "open" if not any(self.periodic) else f"periodic={self.periodic}"
        return f"Lattice(shape={self.shape}, {wrap}, {len(self.nodes)} nodes, {len(self.edges)} edges)"

    @property
    def is_checkerboard(self) -> bool:
        """True if colouring by coordinate parity is proper: no axis wraps around an odd side (> 1)."""
        return all(not wrap or side % 2 == 0 or side == 1 for side, wrap in zip(self.shape, self.periodic))

    def colors(self) -> Int[np.ndarray, " nodes"]:
        """A proper colouring: coordinate parity (2 colours) when valid, else `color_graph` (3 or more)."""
        if len(self.nodes) == 0:
            return np.zeros(0, dtype=np.int64)
        if self.is_checkerboard:
            return self.coords.sum(axis=1) % 2
        return color_graph(len(self.nodes), self.edge_index)

    def blocks(self) -> list[Block]:
        """Free blocks for block Gibbs, one per colour: the two checkerboard sublattices when valid."""
        colour = self.colors()
        if colour.size == 0:
            return []
        order = np.argsort(colour, kind="stable")
        parts = np.split(order, np.cumsum(np.bincount(colour))[:-1])
        node_array = object_array(self.nodes)
        return [Block(take(node_array, part)) for part in parts if part.size]


def _nearest_neighbour_edges(shape: tuple[int, ...], periodic: tuple[bool, ...]) -> np.ndarray:
    grid = np.arange(math.prod(shape), dtype=np.int64).reshape(shape)
    parts = []
    for axis, (side, wrap) in enumerate(zip(shape, periodic)):
        if side == 1:
            continue  # no neighbour along this axis (a wrap would join a site to itself)
        if wrap and side > 2:
            forward = np.roll(grid, -1, axis=axis)
            parts.append(np.stack([grid.ravel(), forward.ravel()], axis=1))
        else:  # open, or a periodic side of 2 whose wrap edge would duplicate the direct one
            lo = np.take(grid, np.arange(side - 1), axis=axis)
            hi = np.take(grid, np.arange(1, side), axis=axis)
            parts.append(np.stack([lo.ravel(), hi.ravel()], axis=1))
    if not parts:
        return np.zeros((0, 2), dtype=np.int64)
    edges = np.concatenate(parts)
    return edges[np.argsort(edges[:, 0], kind="stable")]


def hypercubic_lattice(
    shape: Sequence[int], *, periodic: bool | Sequence[bool] = True, node_type: NodeFactory = SpinNode
) -> Lattice:
    """A lattice of the given side lengths with nearest-neighbour edges.

    `periodic` is one flag for all axes or one per axis. `node_type` creates each node from its
    coordinate tuple (any `AbstractNode` subclass whose constructor takes the name first).
    """
    shape = tuple(int(s) for s in shape)
    if not shape or any(s < 1 for s in shape):
        raise HeatbathError(f"Lattice side lengths must be positive integers, got {shape}.")
    flags = (bool(periodic),) * len(shape) if isinstance(periodic, (bool, np.bool_)) else tuple(map(bool, periodic))
    if len(flags) != len(shape):
        raise HeatbathError(f"periodic has {len(flags)} flags for a {len(shape)}-dimensional lattice; give one per axis.")
    edge_index = _nearest_neighbour_edges(shape, flags)
    coords = np.indices(shape, dtype=np.int64).reshape(len(shape), -1).T
    nodes = make_nodes(node_type, itertools.product(*map(range, shape)))
    node_array = object_array(nodes)
    with paused_gc():
        edges = list(zip(take(node_array, edge_index[:, 0]), take(node_array, edge_index[:, 1])))
    return Lattice(nodes, edge_index, edges, coords, shape, flags)


def lattice_2d(
    rows: int, cols: int | None = None, *, periodic: bool = True, node_type: NodeFactory = SpinNode
) -> Lattice:
    """A `rows × cols` square lattice (square if `cols` is omitted); nodes are named `(r, c)`.

    A periodic L × L lattice with L > 2 has 2L² edges; with open boundaries it has 2L(L - 1).
    """
    return hypercubic_lattice((rows, rows if cols is None else cols), periodic=periodic, node_type=node_type)


def lattice_3d(
    nx: int, ny: int | None = None, nz: int | None = None, *, periodic: bool = True, node_type: NodeFactory = SpinNode
) -> Lattice:
    """An `nx × ny × nz` simple cubic lattice (omitted sides default to `nx`); nodes are named `(x, y, z)`."""
    shape = (nx, nx if ny is None else ny, nx if nz is None else nz)
    return hypercubic_lattice(shape, periodic=periodic, node_type=node_type)
