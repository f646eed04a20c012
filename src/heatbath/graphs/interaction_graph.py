"""The interaction graph of a model: which pairs of nodes must never be updated at the same time.

Block Gibbs is exact only if no free node reads the state of another node updated in the same block.
The engine's unit of "reads the state of" is the head–tail pair of an `InteractionGroup`, so that is
what this module collects, from whatever the user has at hand: a factorised EBM, factors, interaction
groups, a networkx graph of nodes, or plain `(nodes, edges)` lists (edges may be hyperedges, every
pair of whose nodes interacts). Nodes are numbered once, through one dict, with C-level `map`s; no
Python loop runs per node or per edge.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterable, NamedTuple, Sequence

import networkx as nx
import numpy as np
from jaxtyping import Int

from heatbath.errors import HeatbathError
from heatbath.factor import AbstractFactor
from heatbath.graphs._nodes import take
from heatbath.interaction import InteractionGroup
from heatbath.models.ebm import AbstractEBM, AbstractFactorizedEBM
from heatbath.pgm import AbstractNode

__all__ = ["interaction_graph"]

_NodeColumn = Sequence[AbstractNode]


def _group_columns(groups: Iterable[InteractionGroup]) -> list[tuple[_NodeColumn, _NodeColumn]]:
    """(head, tail) column pairs of interaction groups; a group without tails contributes its heads alone."""
    columns = []
    for group in groups:
        head = group.head_nodes.nodes
        columns.append((head, ()))
        columns.extend((head, tail.nodes) for tail in group.tail_nodes)
    return columns


def _edge_columns(edges) -> list[tuple[_NodeColumn, _NodeColumn]]:
    """Column pairs of every pair inside each (hyper)edge; edges of different sizes are grouped by size."""
    edges = list(edges)
    if not edges:
        return []
    lengths = np.fromiter(map(len, edges), dtype=np.int64, count=len(edges))
    columns = []
    for size in np.unique(lengths):
        same = edges if lengths.size and np.all(lengths == size) else take(edges, np.flatnonzero(lengths == size))
        members = list(zip(*same))
        columns.extend((members[i], members[j]) for i, j in itertools.combinations(range(int(size)), 2))
    return columns


def _index_pairs(n_nodes: int, edge_index) -> np.ndarray:
    """Every pair of columns of an integer (hyper)edge array [n_edges, k]."""
    edges = np.asarray(edge_index, dtype=np.int64)
    if edges.ndim != 2:
        raise HeatbathError(f"An integer edge array must have shape [n_edges, k]; got shape {edges.shape}.")
    if edges.size and (edges.min() < 0 or edges.max() >= n_nodes):
        raise HeatbathError(f"The edge array refers to node indices outside [0, {n_nodes}).")
    parts = [edges[:, [i, j]] for i, j in itertools.combinations(range(edges.shape[1]), 2)]
    return np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int64)


class _Parsed(NamedTuple):
    """A supported input, normalised: its own node order (if any) and either node columns or index pairs."""

    nodes: list[AbstractNode] | None
    columns: list[tuple[_NodeColumn, _NodeColumn]]
    index_pairs: np.ndarray | None = None


def _parse(obj: Any) -> _Parsed:
    if isinstance(obj, AbstractFactorizedEBM):
        return _parse(list(obj.factors))
    if isinstance(obj, AbstractEBM):
        raise HeatbathError(
            f"{type(obj).__name__} is not a factorised EBM, so its interactions are unknown; pass its factors or "
            "interaction groups to color_blocks instead."
        )
    if isinstance(obj, (AbstractFactor, InteractionGroup)):
        obj = [obj]
    if isinstance(obj, nx.Graph):
        nodes = list(obj.nodes)
        bad = next((n for n in nodes if not isinstance(n, AbstractNode)), None)
        if bad is not None:
            raise HeatbathError(
                f"The networkx graph's nodes must be heatbath nodes, but it contains {bad!r}. Convert it first with "
                "heatbath.graphs.from_networkx(G), or relabel its nodes to SpinNode()/CategoricalNode() objects."
            )
        return _Parsed(nodes, _edge_columns(obj.edges()))
    if isinstance(obj, (list, tuple)):
        items = list(obj)
        if all(isinstance(x, (AbstractFactor, InteractionGroup)) for x in items):
            groups = []
            for x in items:
                groups.extend(x.to_interaction_groups() if isinstance(x, AbstractFactor) else [x])
            return _Parsed(None, _group_columns(groups))
        if len(items) == 2 and not isinstance(items[0], (AbstractFactor, InteractionGroup, AbstractNode)):
            nodes, edges = list(items[0]), items[1]
            if isinstance(edges, np.ndarray) and edges.dtype.kind in "iu":
                return _Parsed(nodes, [], _index_pairs(len(nodes), edges))
            return _Parsed(nodes, _edge_columns(edges))
    raise HeatbathError(
        f"Cannot derive an interaction graph from {type(obj).__name__}. Pass a factorised EBM, a list of factors, a "
        "list of InteractionGroups, a networkx Graph whose nodes are heatbath nodes, or a (nodes, edges) pair."
    )


def interaction_graph(
    obj: Any, *, nodes: Sequence[AbstractNode] | None = None
) -> tuple[list[AbstractNode], Int[np.ndarray, "pairs 2"]]:
    """The nodes of `obj` and the index pairs of nodes that interact.

    **Arguments:**

    - `obj`: an `AbstractFactorizedEBM` (its factors' interaction groups are used), a list of factors
      and/or `InteractionGroup`s (head–tail pairs), a networkx `Graph` whose nodes are heatbath nodes,
      or a `(nodes, edges)` pair where `edges` is a list of node tuples (pairs or hyperedges) or an
      integer array [n_edges, k] of indices into `nodes`.
    - `nodes`: if given, only these nodes are kept, in this order; pairs touching other nodes (for
      example clamped ones, which never change during sampling) are dropped.

    **Returns:** `(nodes, pairs)`: the node list (by default the input's own node order, or the order
    of first appearance) and an int64 array [n_pairs, 2] of indices into it, with self-pairs removed
    (duplicates may remain).
    """
    parsed = _parse(obj)
    if nodes is not None or parsed.nodes is not None:
        universe = list(nodes) if nodes is not None else parsed.nodes
        index, grow = _index_of(universe), False
    else:
        universe, index, grow = [], {}, True  # nodes are numbered in order of first appearance
    if parsed.index_pairs is not None:
        pairs = parsed.index_pairs
        if nodes is not None:
            pairs = _node_ids(parsed.nodes, index, universe, False)[pairs]
    else:
        ids: dict[int, np.ndarray] = {}  # columns shared by several pairs (a group's heads) are numbered once
        for pair in parsed.columns:
            for column in pair:
                if id(column) not in ids:
                    ids[id(column)] = _node_ids(column, index, universe, grow)
        parts = [np.stack([ids[id(a)], ids[id(b)]], axis=1) for a, b in parsed.columns if len(b)]
        pairs = np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int64)
    keep = (pairs[:, 0] >= 0) & (pairs[:, 1] >= 0) & (pairs[:, 0] != pairs[:, 1])
    return universe, pairs[keep]


def _index_of(universe: list[AbstractNode]) -> dict[AbstractNode, int]:
    index = dict(zip(universe, range(len(universe))))
    if len(index) != len(universe):
        raise HeatbathError("The node list contains the same node more than once; list every node exactly once.")
    return index


def _node_ids(column: _NodeColumn, index: dict, universe: list[AbstractNode], grow: bool) -> np.ndarray:
    """Positions of `column`'s nodes in `universe`; unknown nodes are appended if `grow`, else get -1."""
    ids = np.fromiter(map(index.get, column, itertools.repeat(-1)), dtype=np.int64, count=len(column))
    if grow and ids.size and ids.min() < 0:
        missing = np.flatnonzero(ids < 0)
        new_nodes = list(dict.fromkeys(take(column, missing)))
        index.update(zip(new_nodes, range(len(universe), len(universe) + len(new_nodes))))
        universe.extend(new_nodes)
        ids[missing] = np.fromiter(map(index.__getitem__, take(column, missing)), dtype=np.int64, count=missing.size)
    return ids
