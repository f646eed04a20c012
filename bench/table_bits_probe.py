"""Probe: the pattern-table spin kernel on one bit per spin (`table_bits.cu`, what `method="table"` runs
from `table_spin.BITS_FROM` chains) against one byte per spin (`table_spin.cu`), alone on Pegasus
P(14), GPU.

Both run whole sweeps (four colour updates in place, the same seeds every sweep) in one jitted loop,
from the same initial state and seeds. `--check` runs a few sweeps of each and compares the final
states bit for bit (both kernels do the same float arithmetic per chain, so they must agree exactly).
Variants: `bytes` (the byte kernel), `bits` (registers capped so that an SM holds 32 warps: 64 a thread),
`bits_no_draw` (spin = sign of the field), `bits_uncapped` (96 registers with 4 warps a block) and
`bits_min6` (6 blocks of 4 warps an SM: 79 registers).

    PYTHONPATH=src python3 bench/table_bits_probe.py [--chains 10240 65536] [--warps 4 8] [--check]
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
from table_spin_probe import p14_blocks  # noqa: E402
from timing import best_time  # noqa: E402

from heatbath.kernels import table_spin  # noqa: E402

DEFINES = {"bits": (), "bits_no_draw": (("PROBE_NO_DRAW", 1),), "bits_uncapped": (("MIN_BLOCKS", 1),),
           "bits_min6": (("MIN_BLOCKS", 6),)}


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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, nargs="+", default=[10240, 65536])
    parser.add_argument("--warps", type=int, nargs="+", default=[8])
    parser.add_argument("--variants", nargs="+", default=["bytes", "bits", "bits_no_draw"])
    parser.add_argument("--sweeps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)

    _, tables, blocks = p14_blocks()
    n_spins = sum(tables.block_sizes)
    print(f"P(14): {n_spins} spins, {len(blocks)} colours; device {jax.devices()[0].device_kind}", flush=True)
    for chains in args.chains:
        up = jax.random.bernoulli(jax.random.key(0), 0.5, (n_spins, chains))
        state, packed = table_spin.table_state([up]), table_spin.table_state([up], packed=True)
        seeds = table_spin.fold_seeds(jax.random.bits(jax.random.key(1), (len(blocks), chains), jnp.uint32))
        if args.check:
            want = np.asarray(sweeps(blocks, "bytes", 8, 3)(state, seeds))
            for warps in args.warps:
                got = sweeps(blocks, "bits", warps, 3)(packed, seeds)
                got = np.asarray(table_spin.spins_up(got, jnp.arange(n_spins + 1)))
                print(f"check chains={chains} warps={warps}: {np.mean(got == (want == table_spin.UP)):.7f} of states "
                      f"equal, {int(np.sum(got != (want == table_spin.UP)))} differ", flush=True)
        for variant in args.variants:
            for warps in args.warps:
                run = sweeps(blocks, variant, warps, args.sweeps)
                start = state if variant == "bytes" else packed
                seconds, _ = best_time(lambda i: run(start, seeds), args.repeats)
                rate = args.sweeps * n_spins * chains / seconds / 1e9
                print(f"{variant:>13} warps={warps:<2} chains={chains:>6}: {rate:8.1f} flips/ns", flush=True)


if __name__ == "__main__":
    main()
