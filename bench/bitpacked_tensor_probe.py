"""Probe: the P(14) tensor-core sweep on bit-packed states (one bit per spin, 32 chains per word), GPU.

`tensor_spin_probe.py` found the int8 tensor-core sweep bound by moving and reshuffling gathered int8
states (8 bytes per flip, chain-major, while int8 products want K-major operands). Here the state is
`[nodes + 1, chains / 32]` uint32: bit b of word w of row i is chain 32w + b's spin (1 = +1). A tile
gathers `[K, tile_chains / 32]` words (1/8 of the bytes), unpacks them in registers to {0, 1} int8
and multiplies by the same three int8 coupling digits; with x = (s + 1) / 2,

    Σ_j q_ij s_j = 2 Σ_j q_ij x_j - Σ_j q_ij,

so the integer field, the random words and the comparison are those of the int8 kernel and the
samples are identical (checked against `tensor_spin_probe.reference_update`). The new spins are
packed back into words with a 32-lane sum of shifted bits.

Variants:
- `cm_bcast`: chains as the product's M (`[tile_chains, K] x [K, 16]`, Hopper warpgroup products),
  the words broadcast over their 32 chains and shifted;
- `cm_gather`: chains as M, each (chain, neighbour) element loaded as its own word (2-D gather);
- `rm_bcast`: tile rows as M (`[16, K] x [K, tile_chains]`), as the shipped int8 kernel;
- suffix `_nodraw`: spin = sign of the field (no word, no exp), for the draw's share.

    PYTHONPATH=src python3 bench/bitpacked_tensor_probe.py [--chains 10240 65536] [--variants cm_bcast rm_bcast]
        [--tile-chains 128 256] [--warps 4 8] [--check] [--interpret]
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
from flips_pegasus import pegasus_inputs  # noqa: E402
from tensor_spin_probe import build, reference_update, run  # noqa: E402
from timing import best_time  # noqa: E402

from heatbath.kernels.counter_rng import GOLDEN, mix32, uniform_from_words  # noqa: E402

LANES = 32  # chains per word


def pack(state: jax.Array) -> jax.Array:
    """±1 int8 `[rows, chains]` -> uint32 words `[rows, chains / 32]`."""
    bits = (state > 0).astype(jnp.uint32).reshape(state.shape[0], -1, LANES)
    return jnp.sum(bits << jnp.arange(LANES, dtype=jnp.uint32), axis=2, dtype=jnp.uint32)


def unpack(words: jax.Array) -> jax.Array:
    bits = (words[:, :, None] >> jnp.arange(LANES, dtype=jnp.uint32)) & 1
    return jnp.where(bits.reshape(words.shape[0], -1) > 0, 1, -1).astype(jnp.int8)


def _unpack_cm(words, tc):
    """`[K, tc/32]` words -> `[tc, K]` int8 bits (chains as rows)."""
    k = words.shape[0]
    w = jnp.broadcast_to(words.T[:, None, :], (tc // LANES, LANES, k)).reshape(tc, k)
    shift = (jax.lax.broadcasted_iota(jnp.uint32, (tc, k), 0) & (LANES - 1))
    return ((w >> shift) & 1).astype(jnp.int8)


def _unpack_rm(words, tc):
    """`[K, tc/32]` words -> `[K, tc]` int8 bits (chains as columns)."""
    k = words.shape[0]
    w = jnp.broadcast_to(words[:, :, None], (k, tc // LANES, LANES)).reshape(k, tc)
    shift = (jax.lax.broadcasted_iota(jnp.uint32, (k, tc), 1) & (LANES - 1))
    return ((w >> shift) & 1).astype(jnp.int8)


def _kernel(chunks, tc, words_total, variant, union_ref, digits_ref, qsum_ref, scale_ref, bias_ref, rows_ref, ids_ref, seed_ref, state_ref, out_ref):
    from jax.experimental import pallas as pl

    t = pl.program_id(0)
    wpb = tc // LANES
    first_word = pl.program_id(1) * wpb
    chains_m = variant.startswith("cm")
    acc = [None] * 3
    for k0, kc in zip(np.cumsum((0,) + chunks[:-1]).tolist(), chunks):
        u = union_ref[t, pl.ds(k0, kc)]
        if "gather" in variant:
            lane_word = first_word + jax.lax.broadcasted_iota(jnp.int32, (tc, kc), 0) // LANES
            g = state_ref[u[None, :] * words_total + lane_word]  # [tc, kc] uint32, flat state
            shift = jax.lax.broadcasted_iota(jnp.uint32, (tc, kc), 0) & (LANES - 1)
            x = ((g >> shift) & 1).astype(jnp.int8)
        else:
            w = state_ref[u, pl.ds(first_word, wpb)]  # [kc, wpb]
            x = _unpack_cm(w, tc) if chains_m else _unpack_rm(w, tc)
        for d in range(3):
            dig = digits_ref[t, d, :, pl.ds(k0, kc)]  # [R, kc]
            part = jnp.dot(x, dig.T, preferred_element_type=jnp.int32) if chains_m else jnp.dot(dig, x, preferred_element_type=jnp.int32)
            acc[d] = part if acc[d] is None else acc[d] + part
    qx = acc[0] * 65536 + acc[1] * 256 + acc[2]
    qsum, scale, bias, ids = qsum_ref[t, :], scale_ref[t, :], bias_ref[t, :], ids_ref[t, :]
    seed = seed_ref[pl.ds(pl.program_id(1) * tc, tc)]
    if chains_m:  # [tc, R]
        h = (2 * qx - qsum[None, :]).astype(jnp.float32) * scale[None, :] + bias[None, :]
        words = mix32((ids * jnp.uint32(GOLDEN))[None, :] ^ seed[:, None])
    else:  # [R, tc]
        h = (2 * qx - qsum[:, None]).astype(jnp.float32) * scale[:, None] + bias[:, None]
        words = mix32((ids * jnp.uint32(GOLDEN))[:, None] ^ seed[None, :])
    if "nodraw" in variant:
        up = h > 0
    else:
        up = uniform_from_words(words) * (1 + jnp.exp(-2 * h)) < 1
    R = h.shape[1] if chains_m else h.shape[0]
    if chains_m:
        b = up.astype(jnp.uint32).reshape(wpb, LANES, R) << jax.lax.broadcasted_iota(jnp.uint32, (wpb, LANES, R), 1)
        packed = jnp.sum(b, axis=1).T  # [R, wpb]
    else:
        b = up.astype(jnp.uint32).reshape(R, wpb, LANES) << jax.lax.broadcasted_iota(jnp.uint32, (R, wpb, LANES), 2)
        packed = jnp.sum(b, axis=2)
    if "gather" in variant:
        out_ref[rows_ref[t, :][:, None] * words_total + first_word + jax.lax.broadcasted_iota(jnp.int32, (R, wpb), 1)] = packed
    else:
        out_ref[rows_ref[t, :], pl.ds(first_word, wpb)] = packed


def colour_update(table, words, seed, tc, variant, interpret=False, num_warps=4):
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plgpu

    rows_total, words_total = words.shape
    flat = "gather" in variant
    state = words.reshape(-1) if flat else words
    kw = {} if interpret else dict(compiler_params=plgpu.CompilerParams(num_warps=num_warps, num_stages=1))
    out = pl.pallas_call(
        functools.partial(_kernel, tuple(table["chunks"]), tc, words_total, variant),
        out_shape=jax.ShapeDtypeStruct(state.shape, jnp.uint32),
        grid=(table["T"], words_total * LANES // tc),
        input_output_aliases={8: 0},
        interpret=interpret,
        **kw,
    )(jnp.asarray(table["union"]), jnp.asarray(table["digits"]), jnp.asarray(table["qsum"]), jnp.asarray(table["scale"]),
      jnp.asarray(table["bias"]), jnp.asarray(table["rows"]), jnp.asarray(table["ids"]), seed, state)
    return out.reshape(rows_total, words_total)


def add_qsum(tables):
    for t in tables:
        q = (t["digits"].astype(np.int64) * np.array([65536, 256, 1])[None, :, None, None]).sum(1)  # [T, R, K]
        t["qsum"] = q.sum(axis=2).astype(np.int32)
    return tables


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--chains", type=int, nargs="+", default=[10240])
    p.add_argument("--tile-chains", type=int, nargs="+", default=[128])
    p.add_argument("--variants", nargs="+", default=["cm_bcast", "rm_bcast", "cm_gather"])
    p.add_argument("--warps", type=int, nargs="+", default=[4])
    p.add_argument("--sweeps", type=int, default=100)
    p.add_argument("--check", action="store_true")
    p.add_argument("--interpret", action="store_true")
    args = p.parse_args(argv)
    edges, n, colours, biases, weights = pegasus_inputs()
    print(f"device {jax.devices()[0].device_kind}; jax {jax.__version__}", flush=True)
    tables = add_qsum(build(n, edges, colours, biases, weights, 16, 32))
    print(f"K={[t['K'] for t in tables]} tiles={[t['T'] for t in tables]}", flush=True)
    if args.check:
        C = 128
        chain_words = jax.random.bits(jax.random.key(3), (C, 2), jnp.uint32)
        state0 = jnp.where(jax.random.bernoulli(jax.random.key(4), 0.5, (n + 1, C)), 1, -1).astype(jnp.int8)
        ref = jax.jit(lambda s: run(tables, s, chain_words, 3, reference_update))(state0)
        for variant in [v for v in args.variants if "nodraw" not in v]:
            for tc in (64, 128):
                upd = functools.partial(colour_update, tc=tc, variant=variant, interpret=args.interpret)
                got = unpack(jax.jit(lambda s: run(tables, s, chain_words, 3, upd))(pack(state0)))
                print(f"  check {variant} tc={tc}: agreement with the int8 reference {float(jnp.mean(got[:n] == ref[:n])):.6f}", flush=True)
    for C in ([] if args.interpret else args.chains):
        chain_words = jax.random.bits(jax.random.key(3), (C, 2), jnp.uint32)
        words0 = pack(jnp.ones((n + 1, C), jnp.int8))
        for variant in args.variants:
            for tc in args.tile_chains:
                for nw in args.warps:
                    upd = functools.partial(colour_update, tc=tc, variant=variant, num_warps=nw)
                    f = jax.jit(lambda s, cw: run(tables, s, cw, args.sweeps, upd))
                    try:
                        best, _ = best_time(lambda i: f(words0, chain_words), 3)  # noqa: B023
                        print(f"  C={C} {variant} TC={tc} warps={nw}: {args.sweeps * n * C / best / 1e9:.1f} flips/ns", flush=True)
                    except Exception as e:  # noqa: BLE001
                        print(f"  C={C} {variant} TC={tc} warps={nw}: FAILED {type(e).__name__}: {str(e)[:400]}", flush=True)


if __name__ == "__main__":
    main()
