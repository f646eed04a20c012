"""Probe: whole sweeps with the state resident in a cluster (`heatbath.kernels.table_resident`) against
the per-update table kernel (`table_spin`), each alone on Pegasus P(14), GPU of compute capability 9.0.

Both run `--sweeps` sweeps of four colour updates on the same state shape, without the sampling loop
around them: the per-update kernel as a jitted loop of launches, the resident kernel as one launch.
`--slices`, `--words` and `--threads` vary the resident launch's shape (chains per cluster, 4-chain
words per work item, threads per block; 0 = the default). `--check` also compares the two kernels'
final states bit for bit.

    PYTHONPATH=src python3 bench/table_resident_probe.py [--chains 64 256 1024 4096] [--slices 16 32 64]
        [--words 1 2 4] [--threads 0] [--sweeps 100] [--check]
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from table_spin_probe import p14_blocks, sweep_rate  # noqa: E402
from timing import best_time  # noqa: E402

from heatbath.kernels import table_resident, table_spin  # noqa: E402


PROBES = {"all_local": (("PROBE_ALL_LOCAL", 1),), "no_stage": (("PROBE_NO_STAGE", 1),),
          "no_barrier": (("PROBE_NO_BARRIER", 1),), "no_work": (("PROBE_NO_WORK", 1),),
          "plain_shared": (("PROBE_PLAIN_SHARED", 1),), "no_draw": (("PROBE_NO_DRAW", 1),)}


def resident_rate(program, tables, blocks, chains: int, sweeps: int, repeats: int, check: bool, spread="local",
                  defines=(), **shape):
    order = tuple(tuple(members) for members in program.gibbs_spec.sampling_order)
    layout = table_resident.resident_layout(table_spin.table_layouts(tables), tables.block_sizes, order, spread)
    config = table_resident.resident_config(layout, chains, **shape)
    if config is None:
        return None, (None, None)
    inputs = table_resident.resident_inputs(layout, blocks)
    n_spins = sum(tables.block_sizes)
    state = jnp.where(jax.random.bernoulli(jax.random.key(0), 0.5, (n_spins + 1, chains)), table_spin.UP, 0).astype(jnp.uint8)
    state = state.at[-1].set(0)
    seeds = table_spin.fold_seeds(jax.random.bits(jax.random.key(1), (sweeps, len(blocks), chains), jnp.uint32))
    run = jax.jit(lambda s: table_resident.resident_sweeps(layout, inputs, config, s, seeds, defines))
    seconds, out = best_time(lambda i: run(state), repeats)
    agree = None
    if check:
        @jax.jit
        def per_update(state):
            def body(s, state):
                for b in layout.updates:
                    state = table_spin.table_block_update(blocks[b], state, seeds[s], b)
                return state
            return jax.lax.fori_loop(0, sweeps, body, state)
        agree = bool(np.array_equal(np.asarray(per_update(state)), np.asarray(run(state))))
    return sweeps * n_spins * chains / seconds / 1e9, (config, agree)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, nargs="+", default=[64, 256, 1024, 4096])
    parser.add_argument("--slices", type=int, nargs="+", default=[32])
    parser.add_argument("--words", type=int, nargs="+", default=[1])
    parser.add_argument("--threads", type=int, nargs="+", default=[0])
    parser.add_argument("--sweeps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--spreads", nargs="+", default=["local"], choices=["local", "turns"])
    parser.add_argument("--probes", nargs="+", default=[],
                        help="diagnostic variants (wrong samples, timing only): every read local, no staging, no "
                        "cluster barrier, no work items, plain shared loads, no draw; join with + (no_stage+no_barrier)")
    args = parser.parse_args(argv)

    program, tables, blocks = p14_blocks()
    n_spins = sum(tables.block_sizes)
    print(f"P(14): {n_spins} spins; device {jax.devices()[0].device_kind}")
    for chains in args.chains:
        rate = sweep_rate(blocks, n_spins, chains, args.sweeps, args.repeats)
        print(f"chains={chains:>6} per-update kernel: {rate:8.1f} flips/ns", flush=True)
        variants = [(spread, ()) for spread in args.spreads] + [
            (p, tuple(d for part in p.split("+") for d in PROBES[part])) for p in args.probes]
        for name, defines in variants:
            for c in args.slices:
                for words in args.words:
                    for threads in args.threads:
                        if chains % c:
                            continue
                        rate, (config, agree) = resident_rate(
                            program, tables, blocks, chains, args.sweeps, args.repeats, args.check and not defines,
                            spread="local" if defines else name, defines=defines, slice_chains=c, words=words,
                            threads=threads or None)
                        if rate is None:
                            continue
                        same = "" if agree is None else f"  same states: {agree}"
                        print(f"chains={chains:>6} resident {name:<36} slice={c:<3} words={words} threads={config.threads:<4} "
                              f"({config.shared_bytes // 1024} KiB): {rate:8.1f} flips/ns{same}", flush=True)

if __name__ == "__main__":
    main()
