"""A fused GPU kernel (Pallas on Triton) for one block update of the pairwise spin kernel.

One program instance owns a tile of `tile_nodes` nodes × `tile_chains` chains. It reads each
neighbour's row of chains straight from the source block's state (one coalesced gather per
neighbour slot), accumulates the field in registers, draws the random words with the same
`counter_rng` functions as the jax.numpy sweep, and writes the new int8 spins: one pass over
memory, no materialised `[n, D, chains]` intermediate. The arithmetic is the jax.numpy sweep's, so
both paths sample the same chain up to float rounding of the field.

Chains must be a multiple of `tile_chains` (the caller pads); node counts need not be.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int8, Int32, UInt32

from heatbath.kernels.counter_rng import signed_coupling, uniform_from_words, update_words
from heatbath.kernels.pallas_backend import pallas_available

__all__ = ["pallas_available", "pallas_block_update", "TILE_CHAINS"]

TILE_NODES = 32
TILE_CHAINS = 128


def _kernel(widths, n, tile_nodes, tile_chains, *refs):
    from jax.experimental import pallas as pl

    bias_ref, ids_ref, seed_ref = refs[:3]
    out_ref = refs[-1]
    sources = refs[3:-1]
    r0 = pl.program_id(0) * tile_nodes
    c0 = pl.program_id(1) * tile_chains
    rows = r0 + jnp.arange(tile_nodes)
    valid = rows < n
    safe_rows = jnp.where(valid, rows, 0)
    chains = pl.ds(c0, tile_chains)
    acc = jnp.broadcast_to(bias_ref[safe_rows][:, None], (tile_nodes, tile_chains))
    for k, width in enumerate(widths):
        state_ref, neighbour_ref, coupling_ref = sources[3 * k : 3 * k + 3]
        for d in range(width):
            idx = neighbour_ref[safe_rows, d]
            w = coupling_ref[safe_rows, d]
            acc = acc + signed_coupling(w[:, None], state_ref[idx, chains])
    words = update_words(seed_ref[chains], ids_ref[safe_rows])
    u = uniform_from_words(words)
    new = jnp.where(u * (1 + jnp.exp(-2 * acc)) < 1, 1, -1).astype(jnp.int8)
    from jax.experimental.pallas import triton as plgpu

    plgpu.store(out_ref.at[safe_rows, chains], new, mask=valid[:, None])


def pallas_block_update(
    bias: Float[Array, " n"],
    node_ids: UInt32[Array, " n"],
    seed: UInt32[Array, " chains"],
    sources: list[tuple[Int8[Array, "m chains"], Int32[Array, "n d"], Float[Array, "n d"]]],
    *,
    tile_nodes: int = TILE_NODES,
    tile_chains: int = TILE_CHAINS,
    num_warps: int = 4,
) -> Int8[Array, "n chains"]:
    """New spins `[n, chains]` of one free block from its sources `(state, neighbours, couplings)`."""
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plgpu

    n = bias.shape[0]
    chains = seed.shape[0]
    tile_chains = min(tile_chains, chains)
    if chains % tile_chains:
        raise ValueError(f"chains ({chains}) must be a multiple of {tile_chains}")
    widths = tuple(int(nb.shape[1]) for _, nb, _ in sources)
    grid = (pl.cdiv(n, tile_nodes), chains // tile_chains)
    flat = [x for source in sources for x in source]
    return pl.pallas_call(
        functools.partial(_kernel, widths, n, tile_nodes, tile_chains),
        out_shape=jax.ShapeDtypeStruct((n, chains), jnp.int8),
        grid=grid,
        compiler_params=plgpu.CompilerParams(num_warps=num_warps),
    )(bias, node_ids, seed, *flat)
