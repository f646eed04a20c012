"""Import graphs from networkx: new heatbath nodes for arbitrary node labels."""

from __future__ import annotations

from typing import Callable, Hashable

import networkx as nx

from heatbath.errors import HeatbathError
from heatbath.graphs._nodes import make_nodes, paused_gc
from heatbath.pgm import AbstractNode, SpinNode

__all__ = ["from_networkx"]


def from_networkx(
    graph: nx.Graph, *, node_type: Callable[[Hashable], AbstractNode] = SpinNode
) -> tuple[list[AbstractNode], list[tuple[AbstractNode, AbstractNode]], dict[Hashable, AbstractNode]]:
    """Make one heatbath node per networkx node, named by its label.

    **Returns:** `(nodes, edges, mapping)`: nodes in `graph.nodes` order, edges in `graph.edges` order
    (so per-edge weights line up with it), and the map from label to node.

    Self-loops are rejected: a spin coupled to itself is a constant, and dropping it silently would
    shift the alignment between `graph.edges` and any weights built from it.
    """
    if not isinstance(graph, nx.Graph):
        raise HeatbathError(f"from_networkx expects a networkx Graph, got {type(graph).__name__}.")
    if graph.is_multigraph():
        raise HeatbathError("from_networkx does not accept multigraphs; merge parallel edges first (nx.Graph(G)).")
    loop = next(iter(nx.selfloop_edges(graph)), None)
    if loop is not None:
        raise HeatbathError(
            f"The graph has a self-loop at node {loop[0]!r}; remove self-loops first "
            "(G.remove_edges_from(nx.selfloop_edges(G)))."
        )
    labels = list(graph.nodes)
    nodes = make_nodes(node_type, labels)
    mapping = dict(zip(labels, nodes))
    if graph.number_of_edges() == 0:
        return nodes, [], mapping
    heads, tails = zip(*graph.edges())
    with paused_gc():
        edges = list(zip(map(mapping.__getitem__, heads), map(mapping.__getitem__, tails)))
    return nodes, edges, mapping
