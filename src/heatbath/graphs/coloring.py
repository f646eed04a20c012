"""Proper colourings of large sparse graphs, computed with vectorised numpy.

Block Gibbs updates every node of one colour at the same time, which is exact only if no two nodes of
a colour interact; fewer colours mean fewer sequential sub-sweeps per sweep. `color_graph` first tries
two colours (a parity union-find, which succeeds exactly when the graph is bipartite, e.g. lattices
with even or open sides, Chimera, RBMs). Otherwise it orders the nodes smallest-last (peeling all
nodes of minimum remaining degree at once, layer by layer), colours them greedily in that order with
Jones–Plassmann rounds (each round colours, at once, the nodes that outrank all their uncoloured
neighbours, so the result equals sequential greedy in that order), and finishes with a few passes of
iterated greedy recolouring, which never increases the number of colours. Smallest-last matters: on
Pegasus P(14) it gives 4 colours where largest-degree-first or random orders give 8 to 10.
`color_blocks` applies this to a model's interaction graph and returns ready-made free blocks.
Every round is a handful of numpy operations over edge arrays; no Python code runs per node, so a
10^6-node lattice colours in a fraction of a second when it is bipartite and in a few seconds when not.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from jaxtyping import Int

from heatbath.block_management import Block
from heatbath.errors import HeatbathError
from heatbath.graphs._nodes import object_array, take
from heatbath.graphs.interaction_graph import interaction_graph
from heatbath.pgm import AbstractNode

__all__ = ["color_graph", "color_blocks", "is_proper_coloring"]

_DENSE_MEX_LIMIT = 1 << 24  # cells of the boolean table used when it is cheaper than sorting


def _undirected_edges(n_nodes: int, edge_index) -> tuple[np.ndarray, np.ndarray]:
    """Validated endpoints `(u, v)` of every edge, self-loops dropped (a node never conflicts with itself)."""
    edges = np.asarray(edge_index)
    if edges.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    if edges.ndim != 2 or edges.shape[1] != 2 or edges.dtype.kind not in "iu":
        raise HeatbathError(
            f"edge_index must be an integer array of shape [n_edges, 2]; got dtype {edges.dtype} and shape "
            f"{edges.shape}."
        )
    edges = edges.astype(np.int64, copy=False)
    if edges.min() < 0 or edges.max() >= n_nodes:
        raise HeatbathError(
            f"edge_index refers to node {int(edges.max() if edges.max() >= n_nodes else edges.min())}, but node "
            f"indices must lie in [0, {n_nodes}) for n_nodes={n_nodes}."
        )
    keep = edges[:, 0] != edges[:, 1]
    return edges[keep, 0], edges[keep, 1]


def _compress(parent: np.ndarray, parity: np.ndarray) -> None:
    """Pointer jumping: make every node point at its root, with its parity relative to that root."""
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return
        parity ^= parity[parent]
        parent[:] = grand


def _two_coloring(n_nodes: int, u: np.ndarray, v: np.ndarray) -> np.ndarray | None:
    """A 2-colouring if the graph is bipartite, else None.

    Union-find over "colour of u differs from colour of v" constraints: each round every root hooks
    under its smallest neighbouring root (so pointers only decrease and no cycle can form), recording
    the parity the connecting edge demands; edges inside one tree are checked and dropped.
    """
    parent = np.arange(n_nodes, dtype=np.int64)
    parity = np.zeros(n_nodes, dtype=np.uint8)
    while u.size:
        _compress(parent, parity)
        ru, rv = parent[u], parent[v]
        demand = parity[u] ^ parity[v] ^ 1  # parity required between the two roots
        inside = ru == rv
        if np.any(demand[inside]):
            return None  # an edge inside one tree whose endpoints already share a colour: odd cycle
        cross = ~inside
        u, v, ru, rv, demand = u[cross], v[cross], ru[cross], rv[cross], demand[cross]
        hi, lo = np.maximum(ru, rv), np.minimum(ru, rv)
        target = np.full(n_nodes, n_nodes, dtype=np.int64)
        np.minimum.at(target, hi, lo)
        win = lo == target[hi]
        parent[hi[win]] = lo[win]
        parity[hi[win]] = demand[win]
    _compress(parent, parity)
    return parity.astype(np.int64)


def _adjacency(n_nodes: int, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR neighbour lists `(indptr, neighbours)` of the undirected graph."""
    src, dst = np.concatenate([u, v]), np.concatenate([v, u])
    order = np.argsort(src, kind="stable")
    indptr = np.zeros(n_nodes + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=n_nodes), out=indptr[1:])
    return indptr, dst[order]


def _neighbours_of(nodes: np.ndarray, indptr: np.ndarray, neighbours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(owner, neighbour)` for every neighbour of every node in `nodes`; owner indexes `nodes`."""
    counts = indptr[nodes + 1] - indptr[nodes]
    owner = np.repeat(np.arange(nodes.size), counts)
    ends = np.cumsum(counts)
    positions = np.arange(ends[-1] if ends.size else 0) + np.repeat(indptr[nodes] - (ends - counts), counts)
    return owner, neighbours[positions]


def _smallest_missing(n_owners: int, owner: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """For each owner, the smallest colour >= 0 absent from its `(owner, colour)` pairs (the greedy choice)."""
    if owner.size == 0:
        return np.zeros(n_owners, dtype=np.int64)
    width = int(colour.max()) + 2
    if n_owners * width <= _DENSE_MEX_LIMIT:
        used = np.zeros((n_owners, width), dtype=bool)
        used[owner, colour] = True
        return used.argmin(axis=1).astype(np.int64)
    # Sorted distinct (owner, colour) pairs: the answer is how many of an owner's colours equal their rank.
    key = np.unique(owner * width + colour)
    own, col = key // width, key % width
    first = np.r_[True, own[1:] != own[:-1]]
    rank = np.arange(key.size) - np.maximum.accumulate(np.where(first, np.arange(key.size), 0))
    return np.bincount(own[col == rank], minlength=n_owners).astype(np.int64)


def _smallest_last_layers(n_nodes: int, indptr, neighbours, work_factor: int = 32) -> np.ndarray:
    """The peeling layer of every node: layer t removes all nodes of minimum remaining degree.

    Colouring late layers first (smallest-last order) starts from the densest core and grows outwards.
    Each layer costs time proportional to the nodes still present, so after about `work_factor` times
    the graph's size in total work the remaining nodes are lumped into one last layer; this keeps the
    cost linear on pathological graphs (long paths) at a small price in colours there.
    """
    degree = np.diff(indptr)
    layer = np.zeros(n_nodes, dtype=np.int64)
    alive = np.ones(n_nodes, dtype=bool)
    remaining = np.arange(n_nodes)
    budget, t = work_factor * (n_nodes + neighbours.size), 0
    while remaining.size:
        budget -= remaining.size
        d = degree[remaining]
        removed = remaining[d <= d.min()] if budget > 0 else remaining
        layer[removed] = t
        alive[removed] = False
        _, nbr = _neighbours_of(removed, indptr, neighbours)
        nbr = nbr[alive[nbr]]
        budget -= nbr.size
        np.subtract.at(degree, nbr, 1)
        remaining = remaining[alive[remaining]]
        t += 1
    return layer


def _jones_plassmann(n_nodes: int, u: np.ndarray, v: np.ndarray, indptr, neighbours, priority) -> np.ndarray:
    """Greedy colouring in decreasing `priority` (distinct values), run in parallel rounds.

    Each round colours the uncoloured nodes that outrank all their uncoloured neighbours: they form an
    independent set, and every higher-priority neighbour is already coloured, so taking the smallest
    free colour at once gives exactly the sequential greedy result.
    """
    colour = np.full(n_nodes, -1, dtype=np.int64)
    uncoloured = np.ones(n_nodes, dtype=bool)
    remaining = np.arange(n_nodes)
    # Keep each edge once, as (waiting, first): `first` has the higher priority and must be coloured first.
    first_is_v = priority[v] > priority[u]
    waiting, first = np.where(first_is_v, u, v), np.where(first_is_v, v, u)
    while remaining.size:
        blocked = np.zeros(n_nodes, dtype=bool)
        blocked[waiting] = True
        chosen = remaining[~blocked[remaining]]
        owner, nbr = _neighbours_of(chosen, indptr, neighbours)
        nbr_colour = colour[nbr]
        done = nbr_colour >= 0
        colour[chosen] = _smallest_missing(chosen.size, owner[done], nbr_colour[done])
        uncoloured[chosen] = False
        remaining = remaining[uncoloured[remaining]]
        pending = uncoloured[first]
        waiting, first = waiting[pending], first[pending]
    return colour


def _greedy_by_classes(colour: np.ndarray, class_order: np.ndarray, indptr, neighbours) -> np.ndarray:
    """Greedy colouring that visits the old colour classes in `class_order`, a whole class at a time.

    A class is an independent set, so colouring it at once equals colouring its nodes one by one; and
    a class can always reuse its position in the order, so the result never has more colours (Culberson's
    iterated greedy).
    """
    new = np.full(colour.size, -1, dtype=np.int64)
    members_by_class = np.split(np.argsort(colour, kind="stable"), np.cumsum(np.bincount(colour))[:-1])
    for c in class_order:
        members = members_by_class[c]
        owner, nbr = _neighbours_of(members, indptr, neighbours)
        nbr_colour = new[nbr]
        done = nbr_colour >= 0
        new[members] = _smallest_missing(members.size, owner[done], nbr_colour[done])
    return new


def _reduce_colours(
    colour, indptr, neighbours, passes: int, seed: int, lower_bound: int, patience: int = 3
) -> np.ndarray:
    """Iterated greedy passes (reverse, random and largest-first class orders); keeps the best colouring.

    Stops early at `lower_bound` colours or after `patience` passes without improvement.
    """
    rng = np.random.default_rng(seed + 1)
    best, best_k, since_best = colour, int(colour.max()) + 1, 0
    for p in range(passes):
        if best_k <= lower_bound or since_best >= patience:
            break
        since_best += 1
        k = int(colour.max()) + 1
        sizes = np.bincount(colour, minlength=k)
        orders = (np.arange(k)[::-1], rng.permutation(k), np.argsort(-sizes, kind="stable"))
        colour = _greedy_by_classes(colour, orders[p % 3], indptr, neighbours)
        if colour.max() + 1 < best_k:
            best, best_k, since_best = colour, int(colour.max()) + 1, 0
    return best


def color_graph(
    n_nodes: int, edge_index: Int[np.ndarray, "edges 2"], *, seed: int = 0, reduce_passes: int = 12
) -> Int[np.ndarray, " n_nodes"]:
    """A proper colouring of an undirected graph: `colour[i] != colour[j]` for every edge (i, j).

    **Arguments:**

    - `n_nodes`: the number of nodes; node ids are 0..n_nodes-1.
    - `edge_index`: integer array [n_edges, 2]; duplicates, both directions and self-loops are fine.
    - `seed`: seeds the random tie-breaks, so the result is deterministic.
    - `reduce_passes`: iterated-greedy passes that try to remove colours (0 to skip).

    **Returns:** int64 colours 0..k-1, every colour used. Bipartite graphs get exactly 2 colours (1 if
    there are no edges), and then the lowest-numbered node of every connected component has colour 0.
    """
    n_nodes = int(n_nodes)
    if n_nodes < 0:
        raise HeatbathError(f"n_nodes must be non-negative, got {n_nodes}.")
    u, v = _undirected_edges(n_nodes, edge_index)
    if n_nodes == 0:
        return np.zeros(0, dtype=np.int64)
    two = _two_coloring(n_nodes, u, v)
    if two is not None:
        return two
    indptr, neighbours = _adjacency(n_nodes, u, v)
    layer = _smallest_last_layers(n_nodes, indptr, neighbours)
    tie_break = np.random.default_rng(seed).permutation(n_nodes)
    colour = _jones_plassmann(n_nodes, u, v, indptr, neighbours, layer * n_nodes + tie_break)
    return _reduce_colours(colour, indptr, neighbours, reduce_passes, seed, lower_bound=3)


def is_proper_coloring(colour: Int[np.ndarray, " n_nodes"], edge_index: Int[np.ndarray, "edges 2"]) -> bool:
    """True if no edge (other than a self-loop) joins two nodes of the same colour."""
    edges = np.asarray(edge_index, dtype=np.int64).reshape(-1, 2)
    colour = np.asarray(colour)
    same = colour[edges[:, 0]] == colour[edges[:, 1]]
    return not bool(np.any(same & (edges[:, 0] != edges[:, 1])))


def color_blocks(
    obj: Any, *, superblocks: bool = False, nodes: Sequence[AbstractNode] | None = None, seed: int = 0
) -> list[Block] | list[tuple[Block, ...]]:
    """Free blocks for block Gibbs: independent sets of the interaction graph, one `Block` per (colour, node type).

    **Arguments:**

    - `obj`: what defines the interactions: an `AbstractFactorizedEBM`, a list of factors or
      `InteractionGroup`s, a networkx `Graph` whose nodes are heatbath nodes, or a `(nodes, edges)`
      pair (edges may be hyperedges); see `interaction_graph`.
    - `superblocks`: if True, return one tuple of blocks per colour (THRML's superblock format, so the
      node types of one colour are updated at the same algorithmic time); else a flat list.
    - `nodes`: the free nodes, if not all of them: nodes left out are treated as clamped, so they are
      in no block and do not constrain the colouring.
    - `seed`: seeds the colouring's tie-breaks.

    **Returns:** blocks ordered by colour, then by node type in order of first appearance; inside a
    block, nodes keep the model's order. Empty (colour, type) combinations are left out.
    """
    universe, pairs = interaction_graph(obj, nodes=nodes)
    if not universe:
        return []
    colour = color_graph(len(universe), pairs, seed=seed)
    types = list(map(type, universe))
    type_index = {t: i for i, t in enumerate(dict.fromkeys(types))}
    type_id = np.fromiter(map(type_index.__getitem__, types), dtype=np.int64, count=len(types))
    n_types, n_colours = len(type_index), int(colour.max()) + 1
    key = colour * n_types + type_id
    members = np.split(np.argsort(key, kind="stable"), np.cumsum(np.bincount(key, minlength=n_colours * n_types))[:-1])
    node_array = object_array(universe)
    per_colour = [
        tuple(Block(take(node_array, m)) for m in members[c * n_types : (c + 1) * n_types] if m.size)
        for c in range(n_colours)
    ]
    if superblocks:
        return per_colour
    return [block for group in per_colour for block in group]
