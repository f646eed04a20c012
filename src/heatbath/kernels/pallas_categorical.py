"""A fused GPU kernel (Pallas on Triton) for one block update of the pairwise categorical sweep.

One program owns `tile_nodes` nodes × `tile_chains` chains: it reads each neighbour's row of chains
from the source block's state (one coalesced gather per neighbour slot), builds the K logits in
registers with the jax.numpy sweep's operations (`categorical_draw`), draws the same counter-based
word per node and chain, inverts the CDF and writes the new categories. Nothing `[nodes, chains]`
sized goes to memory but the result.

Why a kernel here when the spin sweep does without one: with weights passed as arguments (as
training passes them) the jax.numpy update of q = 5 Potts runs 41.8 flips/ns on an H200 and this
kernel 97.6 (BENCHMARKS.md). With weights that are compile-time constants (a THRML-style call that
closes over its program) XLA folds the jax.numpy update's selects and both run about 105.

Potts couplings (W_d = J_d·I), when known from concrete weights (`coupling_structure`), need one
load per neighbour (W_d[c_d, c_d]) or none (one J for the whole block) instead of K: q = 5 Potts,
1,000 chains, one H200, THRML-style call: 126 (one load) and 147 (none) against 110 flips/ns.

In general the weight W_d[k, c_d] is one gather per (slot, k) from the flat weight table at the neighbour's
category, not the jax.numpy sweep's chain of K selects: q = 5 Potts, 1,000 chains, one H200, 97.6
against 66.3 flips/ns. (Loading a node's K weights as one vector and splitting it in registers
was slower still, 35-48: Triton moves the split through shared memory.)

Chains must be a multiple of `tile_chains` (the caller pads); node counts need not be.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int32, UInt, UInt32

from heatbath.kernels.categorical_draw import draw_category
from heatbath.kernels.counter_rng import uniform_from_words, update_words
from heatbath.kernels.coupling_structure import DIAGONAL, CouplingForm

__all__ = ["categorical_block_update", "categorical_kernel_fits", "TILE_NODES", "TILE_CHAINS"]

# 8 nodes x 128 chains x 4 warps: the best of ten tiles (2-32 nodes, 64-256 chains, 2-8 warps) for q = 5
# Potts on an H200. Read at call time, so benchmarks can try others.
TILE_NODES = 8
TILE_CHAINS = 128
NUM_WARPS = 4
INDEX_LIMIT = 2**31  # the kernel indexes its weight table and states with int32


def _kernel(widths, n, n_categories, tile_nodes, tile_chains, form, *refs):
    from jax.experimental import pallas as pl

    bias_ref, ids_ref, seed_ref = refs[:3]
    out_ref = refs[-1]
    sources = refs[3:-1]
    rows = pl.program_id(0) * tile_nodes + jnp.arange(tile_nodes)
    safe = jnp.where(rows < n, rows, 0)  # rows past n (the last tile) compute node 0, written to padding
    chains = pl.ds(pl.program_id(1) * tile_chains, tile_chains)
    shape = (tile_nodes, tile_chains)
    theta = [jnp.broadcast_to(bias_ref[safe, k][:, None], shape) for k in range(n_categories)]
    for s, (width, n_tail) in enumerate(widths):
        state_ref, neighbour_ref, weight_ref = sources[3 * s : 3 * s + 3]
        for d in range(width):
            category = state_ref[neighbour_ref[safe, d], chains]
            if form is not None:  # Potts-like: W[c, c] goes to θ_c only, from the table or one constant
                if form == DIAGONAL:  # W[i, d, c] of the flat table of diagonals
                    weight = weight_ref[((safe * width + d) * n_tail)[:, None] + category.astype(jnp.int32)]
                else:
                    weight = jnp.float32(form)
                for k in range(n_categories):
                    theta[k] = theta[k] + jnp.where(category == k, weight, 0.0)
                continue
            # W[i, d, k, c] of the flat table: one index per element, then constant offsets k · K_tail
            index = ((safe * width + d) * n_categories * n_tail)[:, None] + category.astype(jnp.int32)
            for k in range(n_categories):
                theta[k] = theta[k] + weight_ref[index + k * n_tail]
    u = uniform_from_words(update_words(seed_ref[chains], ids_ref[safe]))
    out_ref[rows, chains] = draw_category(theta, u, out_ref.dtype)


def categorical_kernel_fits(bias: Float[Array, "n K"], sources, chains: int) -> bool:
    """Whether the kernel's int32 indices reach every entry of a block's flat weight tables and of
    its source states at `chains` chains (else the block takes the jax.numpy update)."""
    sizes = [w.size for _, _, w in sources] + [state.shape[0] * chains for state, _, _ in sources]
    return max(sizes + [bias.shape[0] * chains]) < INDEX_LIMIT


def categorical_block_update(
    bias: Float[Array, "n K"],
    node_ids: UInt32[Array, " n"],
    seed: UInt32[Array, " chains"],
    sources: list[tuple[UInt[Array, "m chains"], Int32[Array, "n D"], Float[Array, "n D K T"]]],
    dtype,
    *,
    form: CouplingForm = None,
    tile_nodes: int | None = None,
    tile_chains: int | None = None,
    interpret: bool = False,
) -> UInt[Array, "n chains"]:
    """New categories `[n, chains]` (of `dtype`) of one free block from its sources
    `(state, neighbours, weights)`; `weights[i, d, k, t]` couples category k of node i to category t
    of its d-th neighbour. `form` (`coupling_structure`) says what is known of those matrices: None
    (nothing: K loads per neighbour), DIAGONAL (zero off the diagonal: one load of `weights[i, d, t, t]`
    per neighbour) or a float J (J on every diagonal, no padding slot: no load). The sums, and so the
    samples, are the same for every form that holds."""
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plgpu

    tile_nodes, tile_chains = tile_nodes or TILE_NODES, tile_chains or TILE_CHAINS
    n, n_categories = bias.shape
    chains = seed.shape[0]
    tile_chains = min(tile_chains, chains)
    if chains % tile_chains:
        raise ValueError(f"chains ({chains}) must be a multiple of {tile_chains}")
    widths = tuple((int(nb.shape[1]), int(w.shape[3])) for _, nb, w in sources)
    flat = []
    for state, neighbours, weights in sources:
        table = jnp.diagonal(weights, axis1=2, axis2=3) if form == DIAGONAL else weights
        flat += [state, neighbours.astype(jnp.int32), table.reshape(-1)]
    n_tiles = -(-n // tile_nodes)
    options = {"interpret": True} if interpret else {"compiler_params": plgpu.CompilerParams(num_warps=NUM_WARPS)}
    out = pl.pallas_call(
        functools.partial(_kernel, widths, n, n_categories, tile_nodes, tile_chains, form),
        out_shape=jax.ShapeDtypeStruct((n_tiles * tile_nodes, chains), dtype),  # padded to whole tiles
        grid=(n_tiles, chains // tile_chains),
        **options,
    )(bias, node_ids, seed, *flat)
    return out[:n] if n % tile_nodes else out
