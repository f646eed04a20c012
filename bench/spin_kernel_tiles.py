"""Time one block update of the pairwise spin kernel on Pegasus P(14): the jax.numpy update against
the fused Pallas kernel at several tile shapes, to choose the kernel's defaults (GPU only).

    PYTHONPATH=src python3 bench/spin_kernel_tiles.py [--chains 10000]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from heatbath.kernels import pairwise_sweep as spin_sweep
from heatbath.kernels.pallas_spin import pallas_block_update


def _time(fn, repeats=20):
    jax.block_until_ready(fn())
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            out = fn()
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=10000)
    args = parser.parse_args(argv)
    import os
    import sys  # noqa: E401

    sys.path.insert(0, os.path.dirname(__file__))
    from flips_pegasus import build, pegasus_inputs

    program = build("heatbath", *pegasus_inputs())[0]
    tables = spin_sweep.pairwise_tables(program)
    chains = -(-args.chains // 256) * 256
    states = [jnp.ones((len(b), chains), jnp.int8) for b in program.gibbs_spec.blocks]
    words = jnp.stack([jnp.arange(chains, dtype=jnp.uint32)] * 2, 1)
    seeds = spin_sweep.sweep_seeds(words, jnp.uint32(0), len(states))
    params = [spin_sweep.block_couplings(program, tables, b) for b in range(len(states))]
    n = len(program.gibbs_spec.blocks[0])
    flips = n * chains

    from heatbath.kernels import counter_rng

    sources = [(states[src], jnp.asarray(nb), w) for (src, nb, _), w in zip(tables.sources[0], params[0][1])]
    for mode in ("multiply", "select", "xor"):
        counter_rng.SIGNED_COUPLING_MODE = mode
        ref = jax.jit(lambda s, sd: spin_sweep._update(params, tables, 0, s, sd, False))
        print(f"{chains} chains, block of {n} spins, {mode}: jax.numpy {flips / _time(lambda: ref(states, seeds)) / 1e9:.1f} flips/ns")
        fn = jax.jit(lambda sd: pallas_block_update(params[0][0], jnp.asarray(tables.node_ids[0]), sd[0], sources))
        print(f"   pallas default tiles: {flips / _time(lambda: fn(seeds)) / 1e9:.1f} flips/ns", flush=True)
    for method in ("gather", "pallas"):
        program_run = jax.jit(lambda w, s: spin_sweep._run_local(program, spin_sweep.SamplingSchedule(100, 1, 1), tables, w, s, [jnp.arange(4)], method))
        dt = _time(lambda: program_run(words, states), repeats=2)
        print(f"whole run, 100 sweeps, xor, {method}: {100 * 4264 * chains / dt / 1e9:.1f} flips/ns", flush=True)
    for tile_nodes in (8, 16, 32, 64):
        for tile_chains in (64, 128, 256):
            for warps in (2, 4, 8):
                fn = jax.jit(lambda sd: pallas_block_update(params[0][0], jnp.asarray(tables.node_ids[0]), sd[0], sources,
                                                             tile_nodes=tile_nodes, tile_chains=tile_chains, num_warps=warps))
                try:
                    rate = flips / _time(lambda: fn(seeds)) / 1e9
                    print(f"pallas tile_nodes={tile_nodes:>3} tile_chains={tile_chains:>4} warps={warps}: {rate:8.1f} flips/ns", flush=True)
                except Exception as err:  # noqa: BLE001
                    print(f"pallas tile_nodes={tile_nodes} tile_chains={tile_chains} warps={warps}: failed {type(err).__name__}: {str(err)[:200]}")


if __name__ == "__main__":
    main()
