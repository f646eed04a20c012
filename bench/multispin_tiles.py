"""Tune the multispin lattice kernel on a GPU: flips/ns of a loop of packed sweeps over Pallas block
sizes, warp counts and plane counts, after checking that the native kernel gives the same words as
the jax.numpy update. The loop times the kernels alone (the parameters of every update computed once,
before it); `run_lattice`, which adds packing, unpacking and a measurement, is timed by
`flips_lattice.py --kernel-only`.

    PYTHONPATH=src python3 bench/multispin_tiles.py [--L 4096] [--chains 4] [--sweeps 200]
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from timing import best_time  # noqa: E402

from heatbath.kernels import init_lattice  # noqa: E402
from heatbath.kernels import multispin_pallas  # noqa: E402
from heatbath.kernels.checkerboard import heat_bath_thresholds  # noqa: E402
from heatbath.kernels.counter_rng import iota_hashes, key_words  # noqa: E402
from heatbath.kernels.multispin import PLANES, pack_spins, packed_update, sweep_parameters  # noqa: E402

BETA_C = math.log(1.0 + math.sqrt(2.0)) / 2.0
TABLES = heat_bath_thresholds(jnp.float32(BETA_C), jnp.float32(1.0), jnp.float32(0.0))


def check_native_equals_jnp(L: int, chains: int, planes: int) -> bool:
    words = pack_spins(init_lattice(jax.random.key(L), L, chains).spins)
    params = sweep_parameters(TABLES, key_words(jax.random.key(4)), 3, 2, planes)
    same = True
    for colour in (0, 1):
        other = words[:, 1 - colour]
        expected = packed_update(other, colour, iota_hashes(0, other.shape), params[1, colour], planes=planes)
        got = multispin_pallas.pallas_packed_update(other, colour, params, jnp.int32(1), planes=planes)
        same &= bool(np.array_equal(np.asarray(got), np.asarray(expected)))
    return same


def sweep_loop(words, sweeps: int, planes: int, block: int, warps: int):
    """`sweeps` packed sweeps, their parameters computed before the loop (as `run_lattice` does per group)."""
    params = sweep_parameters(TABLES, key_words(jax.random.key(1)), 0, sweeps, planes)
    update = lambda other, c, t: multispin_pallas.pallas_packed_update(  # noqa: E731
        other, c, params, t, planes=planes, block=block, num_warps=warps
    )

    def body(t, w):
        even = update(w[1], 0, t)
        return even, update(even, 1, t)

    return jax.lax.fori_loop(0, sweeps, body, words)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--L", type=int, default=4096)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--sweeps", type=int, default=200)
    parser.add_argument("--configs", nargs="+", default=["128x1x8", "256x2x8", "128x1x6", "128x1x10"],
                        help="kernel settings to time, each BLOCKxWARPSxPLANES")
    args = parser.parse_args(argv)
    print(f"device {jax.devices()[0].device_kind}; jax {jax.__version__}")
    for L, chains in ((64, 1), (192, 2), (1024, 2)):
        print(f"native Pallas kernel == jax.numpy update, L={L}, chains={chains}: {check_native_equals_jnp(L, chains, PLANES)}")
    words = pack_spins(init_lattice(jax.random.key(0), args.L, args.chains).spins)
    words = (words[:, 0], words[:, 1])
    flips = args.sweeps * args.L**2 * args.chains
    print(f"L={args.L}, chains={args.chains}, {args.sweeps} sweeps at beta_c, kernels only")
    print(f"{'block':>6} {'warps':>6} {'planes':>7} {'flips/ns':>9} {'us/sweep':>9}")
    for config in args.configs:
        block, warps, planes = (int(x) for x in config.split("x"))
        run = jax.jit(lambda w: sweep_loop(w, args.sweeps, planes, block, warps))  # noqa: B023
        seconds, _ = best_time(lambda i: run(words), 3)  # noqa: B023
        print(f"{block:>6} {warps:>6} {planes:>7} {flips / seconds / 1e9:>9.4g} {seconds / args.sweeps * 1e6:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
