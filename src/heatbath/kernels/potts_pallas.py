"""The Potts lattice colour update (`heatbath.kernels.potts_lattice`) as one Pallas (Triton) GPU kernel.

A program owns a tile of `TILE_SITES` sites × `TILE_CHAINS` chains of one colour: it reads the four
neighbour states of each (chains contiguous, so every read is a coalesced row segment), forms the
table index, draws the random words, reads one alias-table entry per site (the small table stays in
cache) and writes the new states; nothing else goes to memory. Its arithmetic is the
jax.numpy update's, so both give identical states (tested in interpret mode, and natively on the GPU
by `bench/flips_potts.py --check`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, UInt8, UInt32

from heatbath.kernels.checkerboard_layout import side_is_previous
from heatbath.kernels.counter_rng import mix32, weyl_hashes
from heatbath.kernels.potts_lattice import draw_states

__all__ = ["pallas_potts_update", "TILE_SITES", "TILE_CHAINS", "NUM_WARPS"]

TILE_SITES = 8
TILE_CHAINS = 128
NUM_WARPS = 4


def _kernel(colour, q, L, M, C, tile_sites, tile_chains, seeded, keys_ref, sweep_ref, table_ref, other_ref, out_ref):
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plgpu

    s = pl.program_id(0) * tile_sites + jnp.arange(tile_sites, dtype=jnp.int32)  # site = i·M + m
    c = pl.program_id(1) * tile_chains + jnp.arange(tile_chains, dtype=jnp.int32)
    valid = (s[:, None] < L * M) & (c[None, :] < C)
    s = jnp.where(s < L * M, s, 0)
    i, m = s // M, s % M
    to_previous = side_is_previous(i, colour)
    side_m = jnp.where(to_previous, (m + (M - 1)) % M, (m + 1) % M)
    neighbour_sites = (((i + (L - 1)) % L) * M + m, ((i + 1) % L) * M + m, s, i * M + side_m)

    def read(sites):
        return plgpu.load(other_ref.at[sites[:, None] * C + c[None, :]], mask=valid, other=0).astype(jnp.int32)

    up, down, same, side = (read(n) for n in neighbour_sites)
    config = up + q * (down + q * (same + q * side))
    update = 2 * sweep_ref[0] + colour
    if seeded:  # the site's index inside its chain, keyed by that chain's seed (`potts_torus`)
        # One load per element, in the tile's own layout: a row of seeds broadcast over the sites went
        # through a layout conversion that made the whole update 1.6x slower on an H200.
        seeds = plgpu.load(keys_ref.at[update * C + (c[None, :] + 0 * s[:, None])], mask=valid, other=0)
        hashes = weyl_hashes(s.astype(jnp.uint32))[:, None] ^ seeds
    else:
        hashes = weyl_hashes((s[:, None] * C + c[None, :]).astype(jnp.uint32)) ^ keys_ref[update]
    new = draw_states(mix32(hashes), config, lambda i: table_ref[i], q)
    plgpu.store(out_ref.at[s[:, None] * C + c[None, :]], new.astype(jnp.uint8), mask=valid)


def pallas_potts_update(
    other: UInt8[Array, "L M chains"],
    colour: int,
    q: int,
    table: UInt32[Array, "configs q"],
    keys: UInt32[Array, " updates"] | UInt32[Array, "updates chains"],
    sweep=0,
    *,
    tile_sites: int | None = None,
    tile_chains: int | None = None,
    num_warps: int | None = None,
    interpret: bool = False,
) -> UInt8[Array, "L M chains"]:
    """New states of colour `colour` from the other colour's, with the key `keys[2·sweep + colour]`
    (`sweep` an int32 scalar, may be traced: a sweep loop passes its counter and launches nothing else).
    With `keys` of shape `[updates, chains]`, one seed per chain: a site's word is then keyed by its
    chain's seed and its index inside the chain, so a chain's states depend on its own seeds only.
    Tile settings default to the module's constants, read at call time so a benchmark can tune them."""
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plgpu

    L, M, C = other.shape
    tile_sites, num_warps = tile_sites or TILE_SITES, num_warps or NUM_WARPS
    tile_chains = min(tile_chains or TILE_CHAINS, 1 << max(C - 1, 0).bit_length())
    extra = {} if interpret else {"compiler_params": plgpu.CompilerParams(num_warps=num_warps)}
    out = pl.pallas_call(
        functools.partial(_kernel, colour, q, L, M, C, tile_sites, tile_chains, keys.ndim == 2),
        out_shape=jax.ShapeDtypeStruct((L * M * C,), jnp.uint8),
        grid=(pl.cdiv(L * M, tile_sites), pl.cdiv(C, tile_chains)),
        interpret=interpret,
        **extra,
    )(keys.reshape(-1), jnp.reshape(jnp.asarray(sweep, jnp.int32), (1,)), table.reshape(-1), other.reshape(-1))
    return out.reshape(other.shape)
