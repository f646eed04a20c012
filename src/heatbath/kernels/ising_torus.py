"""Recognise the uniform 2D Ising torus inside a general spin program.

A THRML-style script samples the periodic square-lattice Ising model as a generic program: spin
nodes, one coupling per edge, a bias per node, two checkerboard blocks. heatbath's fastest sampler
for that model is the multispin lattice kernel (`multispin`: one bit per spin, 32 sites per word,
about 8 random words per 32 spins), which the generic program cannot reach through its neighbour
tables. `ising_torus` finds out, from the program's structure and its concrete weights, whether the
program *is* that model, and if so where each node sits on the lattice, so `dispatch` can run the
lattice kernel on it.

It requires: spin nodes only, exactly two free blocks updated one after the other and no clamped
block; every node with four neighbours, all in the other block; one coupling value J on every edge
and one bias h on every node (concrete: traced weights cannot be compared); the neighbour graph an
L × L torus with L a multiple of 64 (the kernel's packing); the two blocks its two checkerboard
colours. Anything else returns None, and the program runs the pairwise kernels as before.

Finding the torus. Node 0 goes to (0, 0) and one of its neighbours to (0, 1). On a square torus
with L ≥ 5, two neighbours of a site lie on a common line exactly when they share no neighbour but
that site; that walks row 0 and fixes one neighbour of node 0 as (1, 0). Row 1 follows by closing
squares, and every later row by stepping each site of the row above away from the row before it:
the neighbour that is none of the three already placed (one vectorised step per row). Whatever the
walk finds is then checked against the whole neighbour table, so a graph that only looks locally
like a torus is rejected, not mis-mapped.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np

from heatbath.block_sampling import BlockSamplingProgram
from heatbath.kernels.coupling_structure import single_value
from heatbath.kernels.identity_cache import IdentityCache
from heatbath.kernels.multispin import LANES
from heatbath.kernels.pairwise_tables import NeighbourTables, flat_neighbours
from heatbath.validation import is_concrete

__all__ = ["IsingTorus", "ising_torus", "find_torus", "checkerboard_sites", "four_neighbour_blocks", "host_biases"]


@dataclass(frozen=True, eq=False)
class IsingTorus:
    """A spin program recognised as the uniform Ising model on an L × L torus.

    `sites[i, j]` is the spec-wide id of the node at row i, column j (free blocks in block order), laid
    out so that the block sampled first is the lattice colour the kernel updates first ((i + j)
    even). The conditional of every node is P(s = +1) = σ(2(J Σ_neighbours s + h)).
    """

    L: int
    sites: np.ndarray  # [L, L] spec-wide node ids
    J: float
    h: float


def ising_torus(program: BlockSamplingProgram, tables: NeighbourTables) -> IsingTorus | None:
    """The torus `program` samples, or None (see the module docstring for what is required)."""
    if tables.kind != "spin":
        return None
    order = four_neighbour_blocks(program, tables)
    if order is None:
        return None
    J, h = _uniform_weights(program, tables)
    if J is None:
        return None
    sites = checkerboard_sites(tables, order[0])
    return None if sites is None else IsingTorus(sites.shape[0], sites, J, h)


def four_neighbour_blocks(program: BlockSamplingProgram, tables: NeighbourTables) -> tuple[int, int] | None:
    """The two free blocks in sampling order when the program has exactly two, sampled one after the
    other, no clamped block, and every node has four neighbours (no padding), all in the other block
    and read through the neighbour tables (not a dense matrix); else None."""
    spec = program.gibbs_spec
    if len(spec.free_blocks) != 2 or len(spec.blocks) != 2:
        return None
    order = [list(members) for members in spec.sampling_order]
    if sorted(map(len, order)) != [1, 1] or any(map(any, tables.dense)):
        return None
    for b in (0, 1):
        sources = tables.sources[b]
        if len(sources) != 1 or sources[0][0] != 1 - b or sources[0][1].shape[1] != 4:
            return None
        if np.any(sources[0][2] == tables.zero_columns[b]):  # a node with fewer than four neighbours
            return None
    return order[0][0], order[1][0]


# Lattice layouts found so far, per (neighbour tables, first block). `pairwise_tables` keeps one tables
# object per program structure, so an eager loop over one program (which traces every call) walks the
# torus once: 0.3 s at L = 1024 and about 5 s at L = 4096 on a CPU. Few entries: a 4096² layout is 64 MB.
_SITES: IdentityCache[np.ndarray | None] = IdentityCache(4)


def checkerboard_sites(tables: NeighbourTables, first: int, multiple: int = 2 * LANES) -> np.ndarray | None:
    """The lattice layout `[L, L]` (spec-wide node ids) of a two-block program whose neighbour graph
    is an L × L torus (L a multiple of `multiple`: 128 for the multispin kernel's packing) coloured by
    its blocks, with block `first` on the sites where (i + j) is even; None for any other graph.
    Remembered per tables object."""
    return _SITES.get((tables,), lambda: _find_checkerboard_sites(tables, first, multiple), extra=(first, multiple))


def _find_checkerboard_sites(tables: NeighbourTables, first: int, multiple: int) -> np.ndarray | None:
    n = sum(tables.block_sizes)
    L = int(round(np.sqrt(n)))
    if L * L != n or L % multiple:
        return None
    neighbours = np.concatenate([flat_neighbours(tables, 0), flat_neighbours(tables, 1)])  # [n, 4] spec-wide ids
    sites = find_torus(neighbours, L)
    if sites is None:
        return None
    in_first = (sites < tables.block_sizes[0]) == (first == 0)
    parity = (np.arange(L)[:, None] + np.arange(L)[None, :]) % 2
    if np.all(in_first == (parity == 1)):
        sites = np.roll(sites, 1, axis=1)  # shifts every site by one column: the colours swap
        in_first = np.roll(in_first, 1, axis=1)
    if not np.all(in_first == (parity == 0)):
        return None  # the blocks are not the checkerboard colours
    sites = sites.astype(np.int32)
    sites.flags.writeable = False  # shared by every IsingTorus of these tables
    return sites


_WEIGHTS: IdentityCache[tuple[float | None, float]] = IdentityCache(32)


def _uniform_weights(program: BlockSamplingProgram, tables: NeighbourTables) -> tuple[float | None, float]:
    """(J, h) when every coupling in use is J and every node's bias h, from concrete weights; else
    (None, 0). Remembered per set of jax Array weights (`known_coupling_forms` explains why), so a
    loop over one program copies its weights from the GPU once."""
    arrays = []
    for b in (0, 1):
        arrays += [x.weights for x in program.per_block_interactions[b]] + list(program.per_block_interaction_active[b])
    if not all(is_concrete(x) for x in arrays):
        return None, 0.0
    return _WEIGHTS.read(tables, arrays, lambda: _read_uniform_weights(program, tables))


def _read_uniform_weights(program: BlockSamplingProgram, tables: NeighbourTables) -> tuple[float | None, float]:
    """numpy on the host only: jax operations here would run inside the caller's trace."""
    couplings = []
    for b in (0, 1):
        for j in tables.pair_interactions[b]:
            w = np.asarray(jax.device_get(program.per_block_interactions[b][j].weights), np.float32)
            couplings.append(w[np.asarray(jax.device_get(program.per_block_interaction_active[b][j]), bool)])
    biases = np.concatenate([host_biases(program, tables, b) for b in (0, 1)])
    J, h = single_value(np.concatenate(couplings)), single_value(biases)
    return (None, 0.0) if J is None or h is None else (J, h)


def host_biases(program: BlockSamplingProgram, tables: NeighbourTables, b: int) -> np.ndarray:
    """Each node's total bias in free block b, summed on the host from concrete weights as
    `block_couplings` sums it: `[n_b]` for spins, `[n_b, q]` for categories."""
    head = () if tables.kind == "spin" else (tables.categories[b],)
    total = np.zeros((tables.block_sizes[b], *head), np.float32)
    for j in tables.bias_interactions[b]:
        w = np.asarray(jax.device_get(program.per_block_interactions[b][j].weights), np.float32)  # [n, k, *head]
        used = np.asarray(jax.device_get(program.per_block_interaction_active[b][j]), bool)  # [n, k]
        total = total + np.where(used.reshape(used.shape + (1,) * len(head)), w, 0).sum(1)
    return total


def find_torus(neighbours: np.ndarray, L: int) -> np.ndarray | None:
    """Lattice positions `[L, L]` of the nodes of a graph given by its neighbour table `[L², 4]`, if
    the graph is the L × L periodic square lattice (L ≥ 5); else None."""
    n = L * L
    if L < 5 or neighbours.shape != (n, 4):
        return None
    def adjacent(x: int) -> set[int]:
        return set(neighbours[x].tolist())

    def collinear(a: int, b: int, centre: int) -> bool:
        """a and b, both neighbours of `centre`, lie on one line through it."""
        return adjacent(a) & adjacent(b) == {centre}

    origin = 0
    right = int(neighbours[origin, 0])
    perpendicular = [int(x) for x in neighbours[origin] if x != right and not collinear(int(x), right, origin)]
    if len(perpendicular) != 2:
        return None
    sites = np.full((L, L), -1, np.int64)
    sites[0, 0], sites[0, 1], sites[1, 0] = origin, right, perpendicular[0]
    for j in range(2, L):  # row 0: step away from the previous site along the line
        here, before = int(sites[0, j - 1]), int(sites[0, j - 2])
        ahead = [x for x in adjacent(here) if x != before and collinear(x, before, here)]
        if len(ahead) != 1:
            return None
        sites[0, j] = ahead[0]
    for j in range(1, L):  # row 1: close the square of (0, j-1), (0, j), (1, j-1)
        corner = (adjacent(int(sites[0, j])) & adjacent(int(sites[1, j - 1]))) - {int(sites[0, j - 1])}
        if len(corner) != 1:
            return None
        sites[1, j] = corner.pop()
    for i in range(2, L):  # every later row at once: the one neighbour that is none of the three known
        above = sites[i - 1]
        known = sites[i - 2] + np.roll(above, 1) + np.roll(above, -1)
        sites[i] = neighbours[above].sum(1) - known  # on a torus; anything else fails the check below
        if np.any((sites[i] < 0) | (sites[i] >= n)):
            return None
    return sites if _is_torus(sites, neighbours) else None


def _is_torus(sites: np.ndarray, neighbours: np.ndarray) -> bool:
    """Every node placed once, and each one's neighbours exactly its four lattice neighbours."""
    n = sites.size
    if not np.all(np.bincount(sites.ravel(), minlength=n) == 1):
        return False
    expected = np.stack([np.roll(sites, s, axis=a) for a in (0, 1) for s in (1, -1)], axis=-1).reshape(n, 4)
    return bool(np.array_equal(np.sort(neighbours[sites.ravel()], axis=1), np.sort(expected, axis=1)))
