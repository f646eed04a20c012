"""Tiles of a spin program for the tensor-core field: which nodes share a matrix product, and their couplings.

The tensor-core update (`tensor_spin`) computes the field of `TILE_ROWS` nodes of one free block at
once as a small matrix product: the tile's couplings `[TILE_ROWS, K]` times the states of the union
of its nodes' neighbours `[K, chains]`. Every zero in that matrix is wasted work, so tiles group
nodes that share neighbours: a greedy pass grows each tile by the node that adds the fewest new
neighbours (on Pegasus P(14) this halves K against tiles of consecutive nodes: 91 vs 168 on average).

Tensor cores multiply int8 exactly, so each node's couplings are written in fixed point, scaled to
the node's largest coupling, and split into three signed int8 digits (balanced base 256):

    q_ij = round(J_ij / scale_i),  |q_ij| <= LARGEST_CODE < 2**23,   q = 65536·d0 + 256·d1 + d2

Three int8 products then give Σ_j q_ij s_j exactly in int32, and the field is `scale_i · Σ + bias_i`.
Its error is at most half a code per coupling, deg_i · max_j |J_ij| · 2**-24 in all, plus the float32
roundings of the scale and of `scale_i · Σ`: the order of the rounding of a float32 sum of the same
terms (P(14), 128 random states: 6.1e-7 against 7.9e-7 at worst), so the update samples the conditionals of the float32 kernels to float32 accuracy. (Small
couplings lose relative precision, never absolute: the field's error is what moves probabilities.)
A node whose |couplings| sum to more than about 130 times its largest one (over 130 strong
neighbours) gets the coarser scale Σ_j |J_ij| / 2**30 instead, so that Σ_j |q_ij| and with it the
int32 field cannot overflow; its error is then below deg_i · Σ_j |J_ij| · 2**-31.

Index tables are static numpy (built once per program structure); the digits are computed from the
program's possibly traced couplings on every call, as in `pairwise_tables`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int8

from heatbath.kernels.pairwise_tables import NeighbourTables, flat_neighbours, real_slots

__all__ = ["TILE_ROWS", "MAX_UNION", "LARGEST_CODE", "BlockTiles", "greedy_tiles", "block_tiles", "tensor_tiles", "coupling_digits", "fixed_point_digits",
           "combine_digits", "tiles_apply"]

TILE_ROWS = 16  # nodes per tile: the smallest row count of an int8 tensor-core product
K_MULTIPLE = 32  # neighbour slots come in multiples of one int8 product's depth
MAX_UNION = 512  # beyond this the padded products cost more than the gather kernel
TILED_ROWS_LIMIT = 1 << 17  # larger blocks stay on the gather sweep: tiling is a Python pass (3 s here)
LARGEST_CODE = 2**23 - 2**17  # keeps the top balanced base-256 digit within int8 (|d0| <= 127)
FIELD_CODE_LIMIT = float(2**30)  # Σ_j |q_ij| stays below this (plus half a code per neighbour), so within int32
DIGIT_WEIGHTS = (65536, 256, 1)


@dataclass(frozen=True, eq=False)
class BlockTiles:
    """Static tiles of one free block.

    - `rows` `[T, TILE_ROWS]`: the block's local node indices per tile; -1 pads the last tile.
    - `union` `[T, K]`: rows of the flat state (all blocks stacked, free then clamped) each tile
      reads; padding repeats row 0 with zero couplings.
    - `slot_tile`, `slot_row`, `slot_col` `[n, D]`: where coupling slot (node, d) of the block's
      concatenated coupling tables lands in the `[T, TILE_ROWS, K]` coupling tiles.
    - `chunks`: K as a sum of powers of two (the kernel's products need power-of-two shapes).
    """

    rows: np.ndarray
    union: np.ndarray
    slot_tile: np.ndarray
    slot_row: np.ndarray
    slot_col: np.ndarray
    chunks: tuple[int, ...]

    @property
    def n_tiles(self) -> int:
        return self.rows.shape[0]


def greedy_tiles(neighbour_lists: list[np.ndarray]) -> list[list[int]]:
    """Tiles of up to TILE_ROWS nodes, each grown by the node adding the fewest new neighbours."""
    n = len(neighbour_lists)
    readers: dict[int, list[int]] = {}
    for i, row in enumerate(neighbour_lists):
        for j in set(row.tolist()):
            readers.setdefault(j, []).append(i)
    degree = [len(set(row.tolist())) for row in neighbour_lists]
    left = np.ones(n, bool)
    tiles, cursor = [], 0
    while True:
        while cursor < n and not left[cursor]:
            cursor += 1
        if cursor == n:
            return tiles
        tile, union, overlap = [], set(), {}
        node = cursor
        while True:
            tile.append(node)
            left[node] = False
            overlap.pop(node, None)
            for j in set(neighbour_lists[node].tolist()) - union:
                union.add(j)
                for r in readers[j]:
                    if left[r]:
                        overlap[r] = overlap.get(r, 0) + 1
            if len(tile) == TILE_ROWS:
                break
            if overlap:
                node = min(overlap, key=lambda r: (degree[r] - overlap[r], r))
            else:  # nothing left shares a neighbour: the lowest unassigned node
                while cursor < n and not left[cursor]:
                    cursor += 1
                if cursor == n:
                    break
                node = cursor
        tiles.append(tile)


def block_tiles(neighbours: np.ndarray, real: np.ndarray) -> BlockTiles | None:
    """Tiles of one free block from its flat-state neighbour table `[n, D]` (`real` marks the
    slots that are couplings, not padding), or None when a tile would read more than MAX_UNION rows
    or the block has more than TILED_ROWS_LIMIT nodes."""
    n, width = neighbours.shape
    if n > TILED_ROWS_LIMIT:
        return None
    lists = [neighbours[i, real[i]] for i in range(n)]
    tiles = greedy_tiles(lists)
    unions = [np.unique(np.concatenate([lists[i] for i in tile] + [np.zeros(0, np.int64)])) for tile in tiles]
    k = max(K_MULTIPLE, -(-max(len(u) for u in unions) // K_MULTIPLE) * K_MULTIPLE)
    if k > MAX_UNION:
        return None
    rows = np.full((len(tiles), TILE_ROWS), -1, np.int32)
    union = np.zeros((len(tiles), k), np.int32)
    slot_tile, slot_row = np.zeros((n, width), np.int32), np.zeros((n, width), np.int32)
    slot_col = np.zeros((n, width), np.int32)  # padding slots add their zero coupling at column 0
    for t, (tile, u) in enumerate(zip(tiles, unions)):
        rows[t, : len(tile)] = tile
        union[t, : len(u)] = u
        for r, i in enumerate(tile):
            slot_tile[i], slot_row[i] = t, r
            slot_col[i, real[i]] = np.searchsorted(u, lists[i])
    chunks = tuple(1 << b for b in range(k.bit_length() - 1, -1, -1) if k & (1 << b))
    return BlockTiles(rows, union, slot_tile, slot_row, slot_col, chunks)


@functools.lru_cache(maxsize=32)  # NeighbourTables hash by identity: one entry per program structure
def tensor_tiles(tables: NeighbourTables) -> tuple[BlockTiles | None, ...]:
    """Tiles of every free block of a spin program (None for a block the tensor path cannot take:
    dense layers, a block that reads itself, neighbourhoods wider than MAX_UNION, or more than
    TILED_ROWS_LIMIT nodes)."""
    out = []
    for b, sources in enumerate(tables.sources):
        n = tables.block_sizes[b]
        if any(tables.dense[b]) or any(src == b for src, _, _ in sources):
            out.append(None)
        elif not sources:  # biases only: every tile reads row 0 with zero couplings
            out.append(block_tiles(np.zeros((n, 1), np.int64), np.zeros((n, 1), bool)))
        else:
            out.append(block_tiles(flat_neighbours(tables, b), real_slots(tables, b)))
    return tuple(out)


def coupling_digits(
    tiles: BlockTiles, couplings: Float[Array, "n D"]
) -> tuple[Int8[Array, "T 3 R K"], Float[Array, "T R"]]:
    """The int8 digits of each tile's fixed-point couplings and the per-node scale.

    `couplings` are the block's coupling tables concatenated over sources (`[n, D]`, zero on padding
    slots), in the order `block_tiles` was given."""
    shape = (tiles.n_tiles, TILE_ROWS, tiles.union.shape[1])
    dense = jnp.zeros(shape, jnp.float32).at[tiles.slot_tile, tiles.slot_row, tiles.slot_col].add(couplings)
    return fixed_point_digits(dense)


def fixed_point_digits(
    couplings: Float[Array, "*lead R K"],
) -> tuple[Int8[Array, "*lead 3 R K"], Float[Array, "*lead R"]]:
    """Each row of `couplings` in fixed point, scaled to the row (module docstring), as three int8
    digits stacked before the last two axes, and the per-row scale: row i is
    `scale_i · Σ_d DIGIT_WEIGHTS[d] · digits[..., d, i, :]` to within half a code."""
    top = jnp.max(jnp.abs(couplings), axis=-1)
    total = jnp.sum(jnp.abs(couplings), axis=-1)
    scale = jnp.maximum(top / LARGEST_CODE, total / FIELD_CODE_LIMIT)  # Σ|q| < 2**31: no int32 overflow
    scale = jnp.where(top > 0, scale, 1.0).astype(jnp.float32)
    q = jnp.round(couplings / scale[..., None]).astype(jnp.int32)
    d2 = ((q + 128) & 255) - 128
    q1 = (q - d2) >> 8
    d1 = ((q1 + 128) & 255) - 128
    d0 = (q1 - d1) >> 8
    return jnp.stack([d0, d1, d2], axis=-3).astype(jnp.int8), scale


def combine_digits(acc: list[Array]) -> Array:
    """Σ_d DIGIT_WEIGHTS[d] · acc[d]: the integer field from the three digits' int32 products."""
    return acc[0] * DIGIT_WEIGHTS[0] + acc[1] * DIGIT_WEIGHTS[1] + acc[2]


def tiles_apply(tiles: BlockTiles, values: Array, fill) -> Array:
    """Per-node values `[n, ...]` laid out as tiles `[T, TILE_ROWS, ...]` (`fill` on padding rows)."""
    rows = jnp.asarray(np.maximum(tiles.rows, 0))
    out = values[rows]
    mask = jnp.asarray(tiles.rows >= 0).reshape(tiles.rows.shape + (1,) * (values.ndim - 1))
    return jnp.where(mask, out, jnp.asarray(fill, values.dtype))
