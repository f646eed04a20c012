"""The multispin colour update as one Pallas (Triton) GPU kernel.

Each program instance owns a block of consecutive words (flat over chains, rows and words). It
loads the block's four neighbour words straight from the other colour (four coalesced loads of 32
spins each), forms the count planes, and runs the plane loop of `multispin.decide_lanes` in
registers until every lane of the block is decided: the number of planes is set by the block, not
by the whole lattice, and nothing but the new words goes back to memory. The arithmetic is the
shared functions of `heatbath.kernels.multispin`, so the kernel and the jax.numpy update give
identical words (tested).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, UInt32

from heatbath.kernels.checkerboard_layout import side_is_previous
from heatbath.kernels.counter_rng import weyl_hashes
from heatbath.kernels.multispin import (
    N_PARAMS,
    PLANES,
    ParameterRow,
    any_set,
    count_bits,
    decide_lanes,
    rotate_lanes_down,
    rotate_lanes_up,
)

__all__ = ["pallas_packed_update", "BLOCK_WORDS", "NUM_WARPS"]

BLOCK_WORDS = 128
NUM_WARPS = 1


def _kernel(colour: int, L: int, W: int, block: int, planes: int, n_chains: int | None, params_ref, sweep_ref, first_ref, *refs):
    from jax.experimental import pallas as pl

    seeds_ref, other_ref, out_ref = refs if n_chains else (None, *refs)

    start = pl.program_id(0) * block
    g = start + jnp.arange(block, dtype=jnp.int32)
    base = (g // (L * W)) * (L * W)  # first word of the chain's lattice
    i = (g - base) // W
    w = (g - base) - i * W
    up = other_ref[base + ((i + (L - 1)) % L) * W + w]
    down = other_ref[base + ((i + 1) % L) * W + w]
    same = other_ref[g]
    # The fourth neighbour: sites m-1 when i + colour is even, else m+1; at a row's end, the word at the
    # other end with its lanes rotated.
    to_previous = side_is_previous(i, colour)
    at_end = jnp.where(to_previous, w == 0, w == W - 1)
    side_w = jnp.where(at_end, jnp.where(to_previous, W - 1, 0), jnp.where(to_previous, w - 1, w + 1))
    side = other_ref[base + i * W + side_w]
    side = jnp.where(at_end, jnp.where(to_previous, rotate_lanes_up(side), rotate_lanes_down(side)), side)

    bits = count_bits(up, down, same, side)
    params = ParameterRow(params_ref, (2 * sweep_ref[0] + colour) * N_PARAMS)
    if n_chains:  # per-chain seeds: the word's index inside its own chain, keyed by that chain's seed
        hashes = weyl_hashes(g - base) ^ seeds_ref[(2 * sweep_ref[0] + colour) * n_chains + g // (L * W)]
    else:
        hashes = weyl_hashes(g + first_ref[0])
    new = decide_lanes(bits, hashes, params, planes=planes, any_set=any_set)
    out_ref[pl.ds(start, block)] = new


def _block_size(total: int, block: int) -> int:
    """The largest power of two <= `block` that divides `total` (so no block straddles the array's end)
    and leaves at least about 1,024 blocks where the array allows it (a small lattice still fills every
    multiprocessor)."""
    enough_blocks = 1 << max(5, (total // 1024).bit_length() - 1)
    return min(block, total & -total, enough_blocks)


def pallas_packed_update(
    other: UInt32[Array, "chains L W"],
    colour: int,
    params: UInt32[Array, "sweeps 2 p"],
    sweep=0,
    *,
    first_word=0,
    seeds: UInt32[Array, "sweeps 2 chains"] | None = None,
    planes: int = PLANES,
    block: int | None = None,
    num_warps: int | None = None,
    interpret: bool = False,
) -> UInt32[Array, "chains L W"]:
    """New words of colour `colour` from the other colour's words, with the parameters `params[sweep,
    colour]` (a table from `multispin.sweep_parameters` with the same `planes`; `sweep` an int32 scalar,
    may be traced). The kernel reads its row from the whole table, so a sweep loop passes its counter
    and launches nothing else. `first_word` is the global index of `other`'s first word (for the random
    words of a device's share of the chains). With `seeds` (one word per sweep, colour and chain, the
    table's rows matching `params`) a word's random bits come from its index inside its own chain and
    that chain's seed instead (`multispin.chain_hashes`), so a chain's samples depend on its own seeds
    only; `first_word` is then unused.

    `block` (words per program) and `num_warps` default to the module's constants, read at call time
    so that a benchmark can tune them.
    """
    if params.ndim != 3 or params.shape[1:] != (2, N_PARAMS):
        raise ValueError(f"params must have shape (sweeps, 2, {N_PARAMS}); got {params.shape}")
    block = block or BLOCK_WORDS
    num_warps = num_warps or NUM_WARPS
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plgpu

    n_chains, L, W = other.shape
    total = n_chains * L * W
    block = _block_size(total, block)
    extra = {} if interpret else {"compiler_params": plgpu.CompilerParams(num_warps=num_warps)}
    out = pl.pallas_call(
        functools.partial(_kernel, colour, L, W, block, planes, None if seeds is None else n_chains),
        out_shape=jax.ShapeDtypeStruct((total,), jnp.uint32),
        grid=(total // block,),
        interpret=interpret,
        **extra,
    )(
        params.reshape(-1),
        *(jnp.reshape(jnp.asarray(x, jnp.int32), (1,)) for x in (sweep, first_word)),
        *([] if seeds is None else [seeds.reshape(-1)]),
        other.reshape(total),
    )
    return out.reshape(other.shape)
