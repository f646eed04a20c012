"""The spin block update with its field computed on tensor cores (int8 products), for CUDA GPUs.

The state is one flat `[nodes + 1, chains]` int8 array (±1; every block stacked, the last row a
scratch row that padding rows of a tile write to). One program of the Pallas (Triton) kernel takes
one tile of `TILE_ROWS` nodes (`tensor_tables`) and `tile_chains` chains:

1. gather the tile's K neighbour rows, `[K, tile_chains]` int8, in power-of-two chunks;
2. three int8 products with the tile's coupling digits give the exact integer field Σ q_ij s_j;
3. field = scale_i · Σ + bias_i, then the pairwise kernels' draw (the same counter-based word per
   node and chain, the same comparison u · (1 + e^{-2 field}) < 1), written in place.

On one H200 this is 1.1-1.3x the jax.numpy gather sweep on Pegasus P(14) from 4,096 chains
(BENCHMARKS.md): gathering each neighbour row once per tile instead of once per node outweighs the
zeros multiplied. Below that the gather sweep is as fast, so `run_pairwise` picks this path from
TENSOR_MIN_CHAINS chains in a call.

`tensor_block_update_jnp` is the same arithmetic in jax.numpy: identical samples to the interpreted
kernel, and to the native one except where the GPU compiler's fused multiply-add rounds the field
differently at a near-tie (agreement > 0.9999 in the tests). It runs the path where Pallas cannot
(CPU tests) and checks the kernel.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int8, Int32, UInt32

from heatbath.kernels.counter_rng import uniform_from_words, update_words
from heatbath.kernels.pairwise_tables import NeighbourTables
from heatbath.kernels.tensor_tables import BlockTiles, combine_digits, coupling_digits, tiles_apply

__all__ = ["TILE_CHAINS", "TensorBlock", "tensor_blocks", "tensor_block_update", "tensor_block_update_jnp"]

TILE_CHAINS = 128  # best of 64/128/256 on an H200 (bench/tensor_spin_probe.py)
NUM_WARPS = 4


class TensorBlock(NamedTuple):
    """One free block's kernel inputs, built from the program's weights by `tensor_blocks`."""

    union: Int32[Array, "T K"]  # flat-state rows each tile reads
    digits: Int8[Array, "T 3 R K"]  # fixed-point couplings, three int8 digits
    scale: Float[Array, "T R"]  # per node: coupling = scale · code
    bias: Float[Array, "T R"]
    rows: Int32[Array, "T R"]  # flat-state rows written (padding: the scratch row)
    ids: UInt32[Array, "T R"]  # spec-wide node ids, keying the random words
    chunks: tuple[int, ...]  # K as powers of two (static)


def tensor_blocks(
    tables: NeighbourTables, tiles: tuple[BlockTiles, ...], params: list[tuple[Array, list[Array]]]
) -> list[TensorBlock]:
    """Kernel inputs of every free block from `(bias, coupling tables)` of `block_couplings` (as
    `sweep_params` passes them: these blocks read no dense layer)."""
    offsets = np.cumsum([0] + list(tables.block_sizes))
    scratch = int(offsets[-1])
    out = []
    for b, (block, (bias, couplings)) in enumerate(zip(tiles, params)):
        n = tables.block_sizes[b]
        flat_couplings = jnp.concatenate(couplings, axis=1) if couplings else jnp.zeros((n, 1), jnp.float32)
        digits, scale = coupling_digits(block, flat_couplings)
        rows = np.where(block.rows >= 0, offsets[b] + block.rows, scratch).astype(np.int32)
        ids = tiles_apply(block, jnp.asarray(tables.node_ids[b]), 0)
        out.append(TensorBlock(jnp.asarray(block.union), digits, scale, tiles_apply(block, bias, 0.0),
                               jnp.asarray(rows), ids, block.chunks))
    return out


def _spins(field: Float[Array, "R C"], seed: UInt32[Array, " C"], ids: UInt32[Array, " R"]) -> Int8[Array, "R C"]:
    u = uniform_from_words(update_words(seed, ids))
    return jnp.where(u * (1 + jnp.exp(-2 * field)) < 1, 1, -1).astype(jnp.int8)


def _kernel(chunks, tile_chains, union_ref, digits_ref, scale_ref, bias_ref, rows_ref, ids_ref, seed_ref, state_ref, out_ref):
    from jax.experimental import pallas as pl

    t = pl.program_id(0)
    chains = pl.ds(pl.program_id(1) * tile_chains, tile_chains)
    acc = [None] * 3
    for k0, kc in zip(np.cumsum((0,) + chunks[:-1]).tolist(), chunks):
        g = state_ref[union_ref[t, pl.ds(k0, kc)], chains]  # [kc, tile_chains] int8
        for d in range(3):
            part = jnp.dot(digits_ref[t, d, :, pl.ds(k0, kc)], g, preferred_element_type=jnp.int32)
            acc[d] = part if acc[d] is None else acc[d] + part
    field = combine_digits(acc).astype(jnp.float32) * scale_ref[t, :][:, None] + bias_ref[t, :][:, None]
    out_ref[rows_ref[t, :], chains] = _spins(field, seed_ref[chains], ids_ref[t, :])


def tensor_block_update(
    block: TensorBlock, state: Int8[Array, "N1 chains"], seed: UInt32[Array, " chains"], *, interpret: bool = False
) -> Int8[Array, "N1 chains"]:
    """The flat state with one free block resampled by the Pallas kernel (in place).

    Chains must be a multiple of the chain tile, `min(TILE_CHAINS, chains)`, a power of two of at
    least 16 (the products' shapes)."""
    from jax.experimental import pallas as pl

    union, digits, scale, bias, rows, ids, chunks = block
    chains = state.shape[1]
    tile_chains = min(TILE_CHAINS, chains)
    if chains % tile_chains or tile_chains < 16 or tile_chains & (tile_chains - 1):
        raise ValueError(f"chains ({chains}) must be a multiple of {TILE_CHAINS}, or a power of two from 16 up")
    options = {"interpret": True} if interpret else {"compiler_params": _compiler_params()}
    return pl.pallas_call(
        functools.partial(_kernel, chunks, tile_chains),
        out_shape=jax.ShapeDtypeStruct(state.shape, jnp.int8),
        grid=(union.shape[0], chains // tile_chains),
        input_output_aliases={7: 0},
        **options,
    )(union, digits, scale, bias, rows, ids, seed, state)


def _compiler_params():
    from jax.experimental.pallas import triton as plgpu

    return plgpu.CompilerParams(num_warps=NUM_WARPS, num_stages=1)


def tensor_block_update_jnp(
    block: TensorBlock, state: Int8[Array, "N1 chains"], seed: UInt32[Array, " chains"]
) -> Int8[Array, "N1 chains"]:
    """`tensor_block_update` in jax.numpy: the same integer field, words and comparison."""
    union, digits, scale, bias, rows, ids, _ = block
    g = state[union].astype(jnp.int32)  # [T, K, chains]
    acc = [jnp.einsum("trk,tkc->trc", digits[:, d].astype(jnp.int32), g) for d in range(3)]
    field = combine_digits(acc).astype(jnp.float32) * scale[:, :, None] + bias[:, :, None]
    new = jax.vmap(_spins, in_axes=(0, None, 0))(field, seed, ids)
    return state.at[rows.reshape(-1)].set(new.reshape(-1, state.shape[1]))
