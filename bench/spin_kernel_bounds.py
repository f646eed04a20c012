"""What bounds the fused Pallas spin kernel on Pegasus P(14)? One block update, timed in variants (GPU only).

- `kernel`: `pallas_spin.pallas_block_update`, the shipped kernel (int8 ±1, J·s by a sign-bit xor);
- `prmt`: the same update with spins stored as the top byte of ±1.0f (0x3F / 0xBF), turned into
  floats by one byte-permute (`prmt`, inline PTX) and summed by fused multiply-adds; it must give
  the same spins as `kernel` (checked);
- `row xor` / `row prmt`: one node per program (scalar neighbour indices, contiguous row loads),
  at four chain tiles;
- `same row`: `kernel`'s arithmetic with every neighbour read from row 0 (no memory traffic to speak
  of): how fast the arithmetic alone is;
- `no draw`: `kernel` without the random word and exp (spin = sign of the field): what the draw costs.

    PYTHONPATH=src python3 bench/spin_kernel_bounds.py [--chains 10240] [--tile-nodes 8] [--tile-chains 128] [--warps 2]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from spin_kernel_tiles import _time  # noqa: E402

from heatbath.kernels import pairwise_sweep as spin_sweep  # noqa: E402
from heatbath.kernels.counter_rng import signed_coupling, uniform_from_words, update_words  # noqa: E402
from heatbath.kernels.pallas_spin import pallas_block_update  # noqa: E402

PLUS, MINUS = 0x3F, -0x41  # top bytes of +1.0f and -1.0f as int8


def _as_floats(s):
    """±1.0f from int8 spins stored as the top byte of ±1.0f: one prmt per spin, four spins a register."""
    from jax.experimental.pallas import triton as plgpu

    body = "\n".join(f"prmt.b32 ${k}, $4, t, 0x{k}654;" for k in range(4))
    asm = "{\n.reg .b32 t;\nmov.b32 t, 0x00800000;\n" + body + "\n}"
    (out,) = plgpu.elementwise_inline_asm(
        asm, args=[s], constraints="=r,=r,=r,=r,r", pack=4,
        result_shape_dtypes=[jax.ShapeDtypeStruct(s.shape, jnp.float32)],
    )
    return out


def _kernel(variant, widths, n, tile_nodes, tile_chains, *refs):
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plgpu

    bias_ref, ids_ref, seed_ref = refs[:3]
    out_ref = refs[-1]
    sources = refs[3:-1]
    rows = pl.program_id(0) * tile_nodes + jnp.arange(tile_nodes)
    valid = rows < n
    safe_rows = jnp.where(valid, rows, 0)
    chains = pl.ds(pl.program_id(1) * tile_chains, tile_chains)
    acc = jnp.broadcast_to(bias_ref[safe_rows][:, None], (tile_nodes, tile_chains))
    for k, width in enumerate(widths):
        state_ref, neighbour_ref, coupling_ref = sources[3 * k : 3 * k + 3]
        for d in range(width):
            idx = neighbour_ref[safe_rows, d]
            if variant == "same row":
                idx = idx * 0
            w = coupling_ref[safe_rows, d]
            s = state_ref[idx, chains]
            if variant == "prmt":
                acc = acc + _as_floats(s) * w[:, None]
            else:
                acc = acc + signed_coupling(w[:, None], s)
    if variant == "no draw":
        up = acc > 0
    else:
        u = uniform_from_words(update_words(seed_ref[chains], ids_ref[safe_rows]))
        up = u * (1 + jnp.exp(-2 * acc)) < 1
    plus, minus = (PLUS, MINUS) if variant == "prmt" else (1, -1)
    plgpu.store(out_ref.at[safe_rows, chains], jnp.where(up, plus, minus).astype(jnp.int8), mask=valid[:, None])


def _row_kernel(variant, widths, tile_chains, *refs):
    """One node × `tile_chains` chains per program: scalar neighbour indices, contiguous row loads."""
    from jax.experimental import pallas as pl

    bias_ref, ids_ref, seed_ref = refs[:3]
    out_ref = refs[-1]
    sources = refs[3:-1]
    node = pl.program_id(0)
    chains = pl.ds(pl.program_id(1) * tile_chains, tile_chains)
    acc = jnp.broadcast_to(bias_ref[node], (tile_chains,))
    for k, width in enumerate(widths):
        state_ref, neighbour_ref, coupling_ref = sources[3 * k : 3 * k + 3]
        for d in range(width):
            s = state_ref[neighbour_ref[node, d], chains]
            w = coupling_ref[node, d]
            if variant == "row prmt":
                acc = acc + _as_floats(s) * w
            else:
                acc = acc + signed_coupling(w, s)
    u = uniform_from_words(update_words(seed_ref[chains], ids_ref[node][None]))[0]
    up = u * (1 + jnp.exp(-2 * acc)) < 1
    plus, minus = (PLUS, MINUS) if variant == "row prmt" else (1, -1)
    out_ref[node, chains] = jnp.where(up, plus, minus).astype(jnp.int8)


def row_update(variant, bias, node_ids, seed, sources, tile_chains, num_warps):
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plgpu

    n, chains = bias.shape[0], seed.shape[0]
    widths = tuple(int(nb.shape[1]) for _, nb, _ in sources)
    return pl.pallas_call(
        functools.partial(_row_kernel, variant, widths, tile_chains),
        out_shape=jax.ShapeDtypeStruct((n, chains), jnp.int8),
        grid=(n, chains // tile_chains),
        compiler_params=plgpu.CompilerParams(num_warps=num_warps),
    )(bias, node_ids, seed, *[x for source in sources for x in source])


def block_update(variant, bias, node_ids, seed, sources, tile_nodes, tile_chains, num_warps):
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plgpu

    n, chains = bias.shape[0], seed.shape[0]
    widths = tuple(int(nb.shape[1]) for _, nb, _ in sources)
    return pl.pallas_call(
        functools.partial(_kernel, variant, widths, n, tile_nodes, tile_chains),
        out_shape=jax.ShapeDtypeStruct((n, chains), jnp.int8),
        grid=(pl.cdiv(n, tile_nodes), chains // tile_chains),
        compiler_params=plgpu.CompilerParams(num_warps=num_warps),
    )(bias, node_ids, seed, *[x for source in sources for x in source])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=10240)
    parser.add_argument("--tile-nodes", type=int, default=8)
    parser.add_argument("--tile-chains", type=int, default=128)
    parser.add_argument("--warps", type=int, default=2)
    args = parser.parse_args(argv)
    from flips_pegasus import build, pegasus_inputs

    program = build("heatbath", *pegasus_inputs())[0]
    tables = spin_sweep.pairwise_tables(program)
    chains = -(-args.chains // args.tile_chains) * args.tile_chains
    rng = np.random.default_rng(0)
    spins = [rng.random((len(b), chains)) < 0.5 for b in program.gibbs_spec.blocks]
    plain = [jnp.asarray(np.where(s, 1, -1), jnp.int8) for s in spins]
    floats = [jnp.asarray(np.where(s, PLUS, MINUS), jnp.int8) for s in spins]
    words = jnp.stack([jnp.arange(chains, dtype=jnp.uint32)] * 2, 1)
    seed = spin_sweep.sweep_seeds(words, jnp.uint32(0), len(plain))[0]
    bias, couplings = spin_sweep.block_couplings(program, tables, 0)
    ids = jnp.asarray(tables.node_ids[0])
    flips = len(program.gibbs_spec.blocks[0]) * chains
    tiles = (args.tile_nodes, args.tile_chains, args.warps)
    print(f"P(14) block 0, {chains} chains, tiles {tiles}, {jax.devices()[0].device_kind}")

    def sources(states):
        return [(states[src], jnp.asarray(nb), w) for (src, nb, _), w in zip(tables.sources[0], couplings)]

    shipped = jax.jit(lambda: pallas_block_update(bias, ids, seed, sources(plain), tile_nodes=tiles[0],
                                                  tile_chains=tiles[1], num_warps=tiles[2]))
    print(f"{'kernel':>10}: {flips / _time(shipped) / 1e9:8.1f} flips/ns", flush=True)
    reference = np.asarray(shipped()) > 0

    def report(label, fn):
        try:
            rate = flips / _time(fn) / 1e9
            agree = float(np.mean((np.asarray(fn()) > 0) == reference))
            print(f"{label:>32}: {rate:8.1f} flips/ns   agreement with kernel {agree:.6f}", flush=True)
        except Exception as err:  # noqa: BLE001
            print(f"{label:>32}: failed {type(err).__name__}: {str(err)[:600]}", flush=True)

    for variant in ("row xor", "row prmt"):
        states = floats if variant == "row prmt" else plain
        for tile_chains, warps in ((512, 2), (1024, 4), (2048, 4), (2048, 8)):
            if chains % tile_chains == 0:
                report(f"{variant}, {tile_chains} chains, {warps} warps", jax.jit(
                    lambda v=variant, st=states, tc=tile_chains, nw=warps: row_update(v, bias, ids, seed, sources(st), tc, nw)))
    for variant in ("prmt", "same row", "no draw"):
        states = floats if variant == "prmt" else plain
        report(variant, jax.jit(lambda v=variant, st=states: block_update(v, bias, ids, seed, sources(st), *tiles)))

if __name__ == "__main__":
    main()
