"""Probe: the Pegasus P(14) spin sweep with the field computed on tensor cores (int8 MMA), GPU.

Each colour's nodes are grouped into tiles of R nodes; a tile's neighbours (the union of its nodes'
neighbour lists, K of them after padding) are gathered as one [K, chains] int8 block and multiplied
by the tile's couplings, quantised per node to 23-bit fixed point and split into three signed int8
digits (balanced base 256), so three int8 MMAs give the exact integer field Σ q_ij s_j. The draw is
the pairwise kernel's (same words, same comparison). The library's version is
`heatbath.kernels.tensor_spin`; this standalone sweep explores shapes and diagnostic variants:

- `rows_m`: the shipped arrangement (tile rows as the product's M, chains as N);
- `chains_m`: chains as M (transposed operands);
- `stacked`: the three digits stacked into one 4R-row product, split afterwards;
- `f16`: fp16 hi + lo couplings against spins converted to fp16, fp32 accumulation;
- suffixes `_nodraw` (spin = sign of the field), `_1digit` (one product), `_contiguous` (K consecutive
  rows instead of the gather): what each part costs.

`--check` compares the kernel with a jax.numpy reference of the same arithmetic (`--interpret` runs
the kernel interpreted, on a CPU) and the fixed-point field with the float64 and float32 fields.

    PYTHONPATH=src python3 bench/tensor_spin_probe.py [--chains 10240] [--rows 16 32] [--variants rows_m f16]
        [--tile-chains 128] [--warps 4] [--blocks 1] [--unroll 1] [--check]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from flips_pegasus import pegasus_inputs  # noqa: E402

from heatbath.kernels.counter_rng import stream_seeds, uniform_from_words, update_words  # noqa: E402

UNROLL = 1
LARGEST_CODE = 2**23 - 2**17  # the top balanced base-256 digit stays within int8


def neighbour_sets(n, edges, weights):
    nb = [dict() for _ in range(n)]
    for (u, v), w in zip(edges, weights):
        nb[u][v] = w
        nb[v][u] = w
    return nb


def greedy_tiles(rows, nb, R):
    left = set(int(r) for r in rows)
    tiles = []
    while left:
        seed = min(left)
        tile, union = [seed], set(nb[seed])
        left.remove(seed)
        while len(tile) < R and left:
            cand = set()
            for j in union:
                cand.update(k for k in nb[j] if k in left)
            if not cand:
                cand = left
            best = min(cand, key=lambda r: (len(set(nb[r]) - union), r))
            tile.append(best)
            union |= set(nb[best])
            left.remove(best)
        tiles.append((tile, sorted(union)))
    return tiles


def digits_of(q):
    d2 = ((q + 128) & 255) - 128
    q1 = (q - d2) >> 8
    d1 = ((q1 + 128) & 255) - 128
    d0 = (q1 - d1) >> 8
    assert np.all(np.abs(d0) <= 127)
    return np.stack([d0, d1, d2]).astype(np.int8)


def build(n, edges, colours, biases, weights, R, k_multiple):
    nb = neighbour_sets(n, edges, weights)
    colour_tables = []
    for c in range(colours.max() + 1):
        tiles = greedy_tiles(np.flatnonzero(colours == c), nb, R)
        K = -(-max(len(u) for _, u in tiles) // k_multiple) * k_multiple
        chunks = [1 << b for b in range(K.bit_length() - 1, -1, -1) if K & (1 << b)]
        T = len(tiles)
        rows = np.full((T, R), n, np.int32)  # pad rows write the junk row n
        union = np.zeros((T, K), np.int32)
        J = np.zeros((T, R, K), np.float64)
        for t, (tile, u) in enumerate(tiles):
            rows[t, : len(tile)] = tile
            union[t, : len(u)] = u
            pos = {j: k for k, j in enumerate(u)}
            for r, i in enumerate(tile):
                for j, w in nb[i].items():
                    J[t, r, pos[j]] = w
        top = np.abs(J).max(axis=2)
        scale = np.where(top > 0, top / LARGEST_CODE, 1.0)
        q = np.rint(J / scale[:, :, None]).astype(np.int64)
        digits = digits_of(q).transpose(1, 0, 2, 3)  # [T, 3, R, K]
        stacked = np.zeros((T, 4 * R, K), np.int8)  # digits stacked along rows: one product of 64 rows
        for d in range(3):
            stacked[:, d * R : (d + 1) * R] = digits[:, d]
        v = J / np.where(top > 0, top, 1.0)[:, :, None]
        hi = v.astype(np.float16)
        halves = np.stack([hi, (v - hi.astype(np.float64)).astype(np.float16)], axis=1)  # [T, 2, R, K]
        bias = np.zeros((T, R), np.float32)
        bias[rows < n] = biases[rows[rows < n]]
        colour_tables.append(dict(rows=rows, union=union, digits=digits, scale=scale.astype(np.float32),
                                  bias=bias, ids=np.minimum(rows, n - 1).astype(np.uint32), K=K, T=T, chunks=chunks, halves=halves, stacked=stacked, top=np.where(top > 0, top, 1.0).astype(np.float32)))
    return colour_tables


def _kernel(R, chunks, TC, CB, variant, union_ref, digits_ref, halves_ref, top_ref, stacked_ref, scale_ref, bias_ref, rows_ref, ids_ref, seed_ref, state_ref, out_ref):
    from jax.experimental import pallas as pl

    t = pl.program_id(0)
    n_digits = 1 if "1digit" in variant else 2 if "f16" in variant else 3
    if "f16" in variant:
        digits_ref, scale_ref = halves_ref, top_ref
    starts = np.cumsum([0] + chunks[:-1]).tolist()
    digits = [[digits_ref[t, d, :, pl.ds(k0, kc)] for k0, kc in zip(starts, chunks)] for d in range(n_digits)]
    unions = [union_ref[t, pl.ds(k0, kc)] for k0, kc in zip(starts, chunks)]
    scale = scale_ref[t, :][:, None]
    bias = bias_ref[t, :][:, None]
    rows = rows_ref[t, :]
    hashed = ids_ref[t, :]
    first_block = pl.program_id(1) * CB

    def block(i, carry):
        chains = pl.ds((first_block + i) * TC, TC)
        acc = [None] * n_digits
        for j, (k0, kc, u) in enumerate(zip(starts, chunks, unions)):
            g = state_ref[pl.ds(k0, kc), chains] if "contiguous" in variant else state_ref[u, chains]
            if "f16" in variant:
                g = g.astype(jnp.float16)
            if "stacked" in variant:
                part = jnp.dot(stacked_ref[t, :, pl.ds(k0, kc)], g, preferred_element_type=jnp.int32)  # [4R, TC]
                acc[0] = part if acc[0] is None else acc[0] + part
                continue
            for d in range(n_digits):
                part = jnp.dot(digits[d][j], g, preferred_element_type=jnp.float32 if "f16" in variant else jnp.int32)
                acc[d] = part if acc[d] is None else acc[d] + part
        if "stacked" in variant:
            acc = jnp.split(acc[0], 4, axis=0)
        x = acc[0] * 65536 + acc[1] * 256 + acc[2] if n_digits == 3 else acc[0] + acc[1] if "f16" in variant else acc[0]
        h = x.astype(jnp.float32) * scale + bias
        if "nodraw" in variant:
            new = jnp.where(h > 0, 1, -1).astype(jnp.int8)
        else:
            u01 = uniform_from_words(update_words(seed_ref[chains], hashed))
            new = jnp.where(u01 * (1 + jnp.exp(-2 * h)) < 1, 1, -1).astype(jnp.int8)
        out_ref[rows, chains] = new
        return carry

    if CB == 1:
        block(0, 0)
    else:
        jax.lax.fori_loop(0, CB, block, 0)


def colour_update(table, state, seed, TC, variant, CB=1, interpret=False, num_warps=4, num_stages=1):
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plgpu

    C = state.shape[1]
    kw = {} if interpret else dict(compiler_params=plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages))
    return pl.pallas_call(
        functools.partial(_kernel, table["rows"].shape[1], table["chunks"], TC, CB, variant),
        out_shape=jax.ShapeDtypeStruct(state.shape, jnp.int8),
        grid=(table["T"], C // (TC * CB)),
        input_output_aliases={10: 0},
        interpret=interpret,
        **kw,
    )(jnp.asarray(table["union"]), jnp.asarray(table["digits"]), jnp.asarray(table["halves"]), jnp.asarray(table["top"]), jnp.asarray(table["stacked"]), jnp.asarray(table["scale"]), jnp.asarray(table["bias"]),
      jnp.asarray(table["rows"]), jnp.asarray(table["ids"]), seed, state)


def reference_update(table, state, seed):
    """The same arithmetic in jax.numpy (exact integer field)."""
    g = state[jnp.asarray(table["union"])].astype(jnp.int32)  # [T, K, C]
    acc = [jnp.einsum("trk,tkc->trc", jnp.asarray(table["digits"])[:, d].astype(jnp.int32), g) for d in range(3)]
    x = acc[0] * 65536 + acc[1] * 256 + acc[2]
    h = x.astype(jnp.float32) * jnp.asarray(table["scale"])[:, :, None] + jnp.asarray(table["bias"])[:, :, None]
    words = update_words(seed, jnp.asarray(table["ids"]).reshape(-1)).reshape(h.shape)
    u = uniform_from_words(words)
    new = jnp.where(u * (1 + jnp.exp(-2 * h)) < 1, 1, -1).astype(jnp.int8)
    return state.at[jnp.asarray(table["rows"]).reshape(-1)].set(new.reshape(-1, state.shape[1]))


def run(tables, state, chain_words, sweeps, update):
    n_col = len(tables)

    def body(i, state):
        seeds = jax.vmap(lambda c: stream_seeds(chain_words, i * jnp.uint32(n_col) + c))(jnp.arange(n_col, dtype=jnp.uint32))
        for c, table in enumerate(tables):
            state = update(table, state, seeds[c])
        return state

    return jax.lax.fori_loop(0, sweeps, lambda i, s: body(jnp.uint32(i), s), state, unroll=UNROLL)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--chains", type=int, nargs="+", default=[10240])
    p.add_argument("--rows", type=int, nargs="+", default=[16])
    p.add_argument("--tile-chains", type=int, nargs="+", default=[128])
    p.add_argument("--variants", nargs="+", default=["rows_m", "chains_m"])
    p.add_argument("--warps", type=int, nargs="+", default=[4])
    p.add_argument("--blocks", type=int, nargs="+", default=[1], help="chain blocks per program")
    p.add_argument("--stages", type=int, nargs="+", default=[1])
    p.add_argument("--sweeps", type=int, default=100)
    p.add_argument("--check", action="store_true")
    p.add_argument("--k-multiple", type=int, default=32)
    p.add_argument("--interpret", action="store_true")
    p.add_argument("--unroll", type=int, default=1)
    args = p.parse_args(argv)
    global UNROLL
    UNROLL = args.unroll
    edges, n, colours, biases, weights = pegasus_inputs()
    print(f"device {jax.devices()[0].device_kind}; jax {jax.__version__}", flush=True)
    for R in args.rows:
        t0 = time.perf_counter()
        tables = build(n, edges, colours, biases, weights, R, args.k_multiple)
        macs = sum(t["T"] * R * t["K"] for t in tables) * 3 / n
        print(f"R={R}: K={[t['K'] for t in tables]} tiles={[t['T'] for t in tables]} int8 MACs/flip={macs:.0f} "
              f"(built in {time.perf_counter() - t0:.1f}s)", flush=True)
        if args.check:
            C = 128
            chain_words = jax.random.bits(jax.random.key(3), (C, 2), jnp.uint32)
            state0 = jnp.where(jax.random.bernoulli(jax.random.key(4), 0.5, (n + 1, C)), 1, -1).astype(jnp.int8)
            ref = jax.jit(lambda s: run(tables, s, chain_words, 3, reference_update))(state0)
            for variant in [v for v in args.variants if v in ("rows_m", "chains_m", "f16", "stacked")]:
                upd = functools.partial(colour_update, TC=32, CB=2, variant=variant, interpret=args.interpret)
                got = jax.jit(lambda s: run(tables, s, chain_words, 3, upd))(state0)
                print(f"  check {variant}: agreement with jnp reference {float(jnp.mean(got[:n] == ref[:n])):.6f}", flush=True)
            # the quantised field against the float32 field
            dense = np.zeros((n, n), np.float64)
            dense[edges[:, 0], edges[:, 1]] = weights
            dense[edges[:, 1], edges[:, 0]] = weights
            s = np.asarray(state0[:n], np.float64)
            exact = dense @ s
            worst = 0.0
            for table in tables:
                g = s[table["union"]]
                q = (table["digits"].astype(np.int64) * np.array([65536, 256, 1])[None, :, None, None]).sum(1)
                x = np.einsum("trk,tkc->trc", q, g) * table["scale"][:, :, None]
                valid = table["rows"] < n
                worst = max(worst, float(np.abs(x[valid] - exact[table["rows"][valid]]).max()))
            f32 = np.zeros(exact.shape, np.float32)
            for (i, j), w in zip(edges, weights):
                f32[i] += np.float32(w) * s[j].astype(np.float32)
                f32[j] += np.float32(w) * s[i].astype(np.float32)
            print(f"  max |quantised field - exact field| = {worst:.3g}; float32 sum: {float(np.abs(f32 - exact).max()):.3g}", flush=True)
        for C in ([] if args.interpret else args.chains):
            chain_words = jax.random.bits(jax.random.key(3), (C, 2), jnp.uint32)
            state0 = jnp.ones((n + 1, C), jnp.int8)
            for variant in args.variants:
                for TC in args.tile_chains:
                    for nw, ns, CB in [(a, b, c) for a in args.warps for b in args.stages for c in args.blocks]:
                        if True:
                            upd = functools.partial(colour_update, TC=TC, variant=variant, num_warps=nw, num_stages=ns, CB=CB)
                            f = jax.jit(lambda s, cw: run(tables, s, cw, args.sweeps, upd))
                            try:
                                jax.block_until_ready(f(state0, chain_words))
                                best = 1e9
                                for _ in range(3):
                                    t0 = time.perf_counter()
                                    jax.block_until_ready(f(state0, chain_words))
                                    best = min(best, time.perf_counter() - t0)
                                print(f"  C={C} {variant} R={R} TC={TC} CB={CB} warps={nw} stages={ns}: {args.sweeps * n * C / best / 1e9:.1f} flips/ns", flush=True)
                            except Exception as e:  # noqa: BLE001
                                print(f"  C={C} {variant} R={R} TC={TC} CB={CB} warps={nw}: FAILED {type(e).__name__}: {str(e)[:300]}", flush=True)


if __name__ == "__main__":
    main()
