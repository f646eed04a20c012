"""D-Wave Pegasus graphs P(6), P(14) and P(16), shipped as edge lists.

Pegasus is the qubit connectivity of D-Wave Advantage annealers and the standard sparse Ising benchmark
(THRML's own example samples an Ising model on P(14)). The graphs are stored as `.npz` files holding
`n_nodes` and an int32 [n_edges, 2] edge list with nodes numbered 0..n-1 (fabric-only nodes, renumbered
contiguously), loaded without pickle.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Callable, Hashable

import networkx as nx
import numpy as np
from jaxtyping import Int

from heatbath.errors import HeatbathError
from heatbath.graphs._nodes import make_nodes, object_array, paused_gc, take
from heatbath.pgm import AbstractNode, SpinNode

__all__ = ["PEGASUS_SIZES", "pegasus_edge_index", "pegasus_graph", "pegasus"]

PEGASUS_SIZES: tuple[int, ...] = (6, 14, 16)


@lru_cache(maxsize=None)
def _load(m: int) -> tuple[int, np.ndarray]:
    if m not in PEGASUS_SIZES:
        sizes = ", ".join(map(str, PEGASUS_SIZES))
        raise HeatbathError(f"Pegasus P({m}) is not shipped with heatbath; available sizes are m = {sizes}.")
    path = resources.files("heatbath.graphs") / "data" / f"pegasus{m}.npz"
    with path.open("rb") as f, np.load(f, allow_pickle=False) as data:
        n_nodes, edges = int(data["n_nodes"]), data["edges"].astype(np.int64)
    edges.setflags(write=False)  # cached and shared between callers
    return n_nodes, edges


def pegasus_edge_index(m: int) -> tuple[int, Int[np.ndarray, "edges 2"]]:
    """`(n_nodes, edge_index)` of Pegasus P(m): int64 [n_edges, 2] indices, each edge once (read-only)."""
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)):
        raise HeatbathError(f"The Pegasus size m must be an integer, got {m!r}.")
    return _load(int(m))


def pegasus_graph(m: int) -> nx.Graph:
    """Pegasus P(m) as a `networkx.Graph` with integer nodes 0..n-1.

    A stand-in for `dwave_networkx.pegasus_graph(m)` where only the graph's structure matters (e.g.
    relabelling its nodes to `SpinNode`s with `nx.relabel_nodes`); node labels are contiguous here,
    not D-Wave's linear indices.
    """
    n_nodes, edges = pegasus_edge_index(m)
    graph = nx.Graph()
    graph.add_nodes_from(range(n_nodes))
    graph.add_edges_from(edges.tolist())
    return graph


def pegasus(
    m: int, *, node_type: Callable[[Hashable], AbstractNode] = SpinNode
) -> tuple[list[AbstractNode], Int[np.ndarray, "edges 2"], list[tuple[AbstractNode, AbstractNode]]]:
    """Pegasus P(m) as new heatbath nodes: `(nodes, edge_index, edges)`.

    Node i is named i; `edges[k]` is `(nodes[edge_index[k, 0]], nodes[edge_index[k, 1]])`.
    """
    n_nodes, edge_index = pegasus_edge_index(m)
    nodes = make_nodes(node_type, range(n_nodes))
    node_array = object_array(nodes)
    with paused_gc():
        edges = list(zip(take(node_array, edge_index[:, 0]), take(node_array, edge_index[:, 1])))
    return nodes, edge_index, edges
