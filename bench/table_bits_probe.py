"""Probe: the pattern-table spin kernel on one bit per spin (`table_bits.cu`, what `method="table"` runs
from `table_spin.BITS_FROM` chains) against one byte per spin (`table_spin.cu`), alone on Pegasus
P(14), GPU.

Both run whole sweeps (four colour updates in place, the same seeds every sweep) in one jitted loop,
from the same initial state and seeds. `--check` runs a few sweeps of each and compares the final
states bit for bit (both kernels do the same float arithmetic per chain, so they must agree exactly).
Variants: `bytes` (the byte kernel), `bits` (the library's choice: registers capped so that an SM holds
32 warps, 64 a thread; from `BIT_LOOP_FROM` words on the pair-table form for nodes of two tables or
more), `bits_no_pair` / `pair` (without / always with the pair-table form; that form takes one
node a block whatever `--warps` says), `pair_plain` (the pair table indexed by the pattern itself,
without the xor that spreads its loads over the banks), `full` (the full-field table of nodes of
three tables, the default for them from `BIT_LOOP_FROM` words),
`bits_no_draw` (spin = sign of the field), `bits_uncapped` (96 registers with 4 warps a block) and
`bits_min6` / `bits_min12` / `bits_min16` (6 / 12 / 16 blocks of 4 warps an SM: 79 / 40 / 32 registers).
`--loop-tiles` and `--loop-from` set how many tiles of 32 words a warp takes, from how many words on
(`table_spin.BIT_LOOP_TILES`, `BIT_LOOP_FROM`).

`--degree D ...` runs the same on random D-regular graphs of `--nodes` spins (couplings N(0, 0.3²),
biases N(0, 1), greedy colours) instead of P(14): nodes of more than 15 neighbours (four or more
tables), for which `method="table"` kept one byte a spin until these measurements (BENCHMARKS.md).

    PYTHONPATH=src python3 bench/table_bits_probe.py [--chains 10240 65536] [--warps 4 8] [--check]
        [--degree 20 40 [--nodes 4096]] [--loop-tiles 1 2 4] [--loop-from 1024]
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
from flips_pegasus import build  # noqa: E402
from table_spin_probe import p14_blocks, tables_and_blocks  # noqa: E402
from timing import best_time  # noqa: E402

from heatbath.kernels import table_spin  # noqa: E402

DEFINES = {"bits": (), "bits_no_draw": (("PROBE_NO_DRAW", 1),), "bits_uncapped": (("MIN_BLOCKS", 1),),
           "bits_min6": (("MIN_BLOCKS", 6),), "bits_min12": (("MIN_BLOCKS", 12),), "bits_min16": (("MIN_BLOCKS", 16),),
           "bits_no_pair": (("PAIR", 0), ("FULL", 0)), "pair": (("PAIR", 1), ("FULL", 0)), "full": (("FULL", 1),),
           "pair_plain": (("PAIR", 1), ("FULL", 0), ("PAIR_PLAIN", 1))}


def sweeps(blocks, variant: str, warps: int, count: int):
    """`count` sweeps of the byte kernel (`variant` "bytes") or of the bit kernel, in place."""
    def body(_, state, seeds):
        for b, block in enumerate(blocks):
            if variant == "bytes":
                state = table_spin.table_block_update(block, state, seeds, b, warps=warps, words=4)
            else:
                state = table_spin.table_block_update(block, state, seeds, b, warps=warps, defines=DEFINES[variant])
        return state

    return jax.jit(lambda state, seeds: jax.lax.fori_loop(0, count, functools.partial(body, seeds=seeds), state))


def regular_graph_blocks(degree: int, n_nodes: int):
    """The table blocks of an Ising model on a random `degree`-regular graph (seed 0)."""
    import networkx as nx

    from heatbath.graphs import color_graph

    edge_index = np.asarray(nx.random_regular_graph(degree, n_nodes, seed=0).edges(), np.int64)
    rng = np.random.default_rng(0)
    inputs = (edge_index, n_nodes, color_graph(n_nodes, edge_index), rng.normal(0, 1, n_nodes).astype(np.float32),
              rng.normal(0, 0.3, len(edge_index)).astype(np.float32))
    return tables_and_blocks(build("heatbath", *inputs)[0])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, nargs="+", default=[10240, 65536])
    parser.add_argument("--warps", type=int, nargs="+", default=[8])
    parser.add_argument("--variants", nargs="+", default=["bytes", "bits", "bits_no_draw"])
    parser.add_argument("--sweeps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--degree", type=int, nargs="+", default=[], help="random regular graphs instead of P(14)")
    parser.add_argument("--nodes", type=int, default=4096)
    parser.add_argument("--loop-tiles", type=int, nargs="+", default=[table_spin.BIT_LOOP_TILES],
                        help="tiles of 32 words a warp takes from table_spin.BIT_LOOP_FROM words on")
    parser.add_argument("--loop-from", type=int, default=table_spin.BIT_LOOP_FROM, help="table_spin.BIT_LOOP_FROM")
    args = parser.parse_args(argv)
    table_spin.BIT_LOOP_FROM = args.loop_from
    if args.degree:
        for degree in args.degree:
            _, tables, blocks = regular_graph_blocks(degree, args.nodes)
            groups = sorted({int(b.tables.shape[1]) for b in blocks})
            print(f"random {degree}-regular graph: {args.nodes} spins, {len(blocks)} colours, tables a node {groups}; "
                  f"device {jax.devices()[0].device_kind}", flush=True)
            measure(args, tables, blocks)
    else:
        _, tables, blocks = p14_blocks()
        print(f"P(14): {sum(tables.block_sizes)} spins, {len(blocks)} colours; device {jax.devices()[0].device_kind}", flush=True)
        measure(args, tables, blocks)


def measure(args, tables, blocks) -> None:
    """The `--check` comparison and the rates of each variant, warp count and chain count."""
    n_spins = sum(tables.block_sizes)
    for chains in args.chains:
        up = jax.random.bernoulli(jax.random.key(0), 0.5, (n_spins, chains))
        state, packed = table_spin.table_state([up]), table_spin.table_state([up], packed=True)
        seeds = table_spin.fold_seeds(jax.random.bits(jax.random.key(1), (len(blocks), chains), jnp.uint32))
        bit_seeds = seeds[:, table_spin.bit_seed_order(chains)]
        if args.check:
            want = np.asarray(sweeps(blocks, "bytes", 8, 3)(state, seeds))
            for variant in [v for v in args.variants if v != "bytes" and v != "bits_no_draw"]:
                for warps in args.warps:
                    got = sweeps(blocks, variant, warps, 3)(packed, bit_seeds)
                    got = np.asarray(table_spin.spins_up(got, jnp.arange(n_spins + 1)))
                    print(f"check {variant} chains={chains} warps={warps}: "
                          f"{np.mean(got == (want == table_spin.UP)):.7f} of states equal, "
                          f"{int(np.sum(got != (want == table_spin.UP)))} differ", flush=True)
        for variant in args.variants:
            for warps in args.warps:
                for loop_tiles in args.loop_tiles if variant != "bytes" else [None]:
                    table_spin.BIT_LOOP_TILES = loop_tiles or table_spin.BIT_LOOP_TILES
                    run = sweeps(blocks, variant, warps, args.sweeps)
                    start, start_seeds = (state, seeds) if variant == "bytes" else (packed, bit_seeds)
                    seconds, _ = best_time(lambda i: run(start, start_seeds), args.repeats)
                    rate = args.sweeps * n_spins * chains / seconds / 1e9
                    loops = loop_tiles and chains // table_spin.BIT_CHAINS >= table_spin.BIT_LOOP_FROM
                    tiles = f" loop tiles={loop_tiles}" if loops else ""
                    print(f"{variant:>13} warps={warps:<2} chains={chains:>6}{tiles}: {rate:8.1f} flips/ns", flush=True)


if __name__ == "__main__":
    main()
