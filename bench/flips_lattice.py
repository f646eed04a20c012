"""Sampling throughput (spin flips per ns) on the periodic 2D square-lattice Ising model, heatbath vs THRML.

The same model in every column: an L × L torus (nodes row-major; each site coupled to its down and
right neighbours with periodic wrap, 2L² edges), uniform J = 1, zero field, at the critical inverse
temperature β_c = ln(1 + √2) / 2 ≈ 0.4407, updated as the two checkerboard blocks (sites of even and
of odd row + column). The nodes, edges and blocks come from heatbath's `lattice_2d` and are handed
to THRML index for index, so both libraries see identical inputs. Every chain starts from the same
random ±1 lattice in every column (`init_lattice`), and runs `--sweeps` sweeps. Columns:

- THRML: `jax.jit(jax.vmap(lambda k, s: sample_states(k, program, schedule, s, [], [Block(nodes)])))`
  over `chains` keys, with `IsingEBM` / `IsingSamplingProgram` (schedule: `sweeps` warm-up sweeps, one
  sample). Skipped (nan) when L > `--thrml-max-L` or with `--no-thrml`.
- heatbath vmap: the same call with heatbath's classes (THRML's import paths). On CUDA GPUs the
  program is recognised as the uniform Ising torus and runs the multispin lattice kernel when L is a
  multiple of 64 (`heatbath.kernels.ising_torus`); `--vmap-pairwise` adds this call and the batched
  one with that route off (the pairwise kernels, as before the route existed). `--sweeps-per-step` times the route
  and the lattice kernel with other numbers of sweeps per GPU loop step (`pallas_backend.SWEEPS_PER_STEP`).
- heatbath batched: the same program through `heatbath.kernels.batched.sample_states_batched` (on CUDA
  GPUs the same route).
- lattice kernel: heatbath's dedicated lattice kernel,
  `heatbath.kernels.run_lattice(key, init_lattice(key, L, chains), β_c, sweeps, measure_every=sweeps)`
  (one energy/magnetisation measurement, after the last sweep, as the others return one sample); for L
  a multiple of 64 that is the multispin kernel (one bit per spin), otherwise the int8 checkerboard
  kernel. `--kernel-only` prints both (`method="packed"` and `method="bytes"`).

Flips/ns = sweeps × L² × chains / seconds, from the best of `--repeats` timed calls after one
compiling call; ratios are against THRML. All libraries run in one process on the same device. A
sanity line per size prints the mean energy per site after the run for every column (they should
agree within noise; the equilibrium value at β_c is -√2 ≈ -1.414 for L → ∞).

    .venv-bench/bin/python bench/flips_lattice.py [--L 64 256 1024] [--chains 64 4096] [--sweeps 100] [--repeats 3]
        [--vmap-pairwise] [--sweeps-per-step 1 16]
    .venv-bench/bin/python bench/flips_lattice.py --L 4096 --chains 4 --kernel-only

(On a machine where thrml is not installed pass `--no-thrml` to time heatbath alone; `--kernel-only`
times only the lattice kernel, which builds no node objects, so it reaches L = 4096 and beyond.)
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
from timing import batched_time, best_time, routes_off, thrml_style_time, with_patches  # noqa: E402

BETA_C = math.log(1.0 + math.sqrt(2.0)) / 2.0


def _library(name: str):
    if name == "thrml":
        from thrml.block_management import Block
        from thrml.block_sampling import SamplingSchedule, sample_states
        from thrml.models import ising
        from thrml.pgm import SpinNode
    else:
        from heatbath.block_management import Block
        from heatbath.block_sampling import SamplingSchedule, sample_states
        from heatbath.models import ising
        from heatbath.pgm import SpinNode
    return ising, Block, SamplingSchedule, sample_states, SpinNode


def lattice_inputs(L: int):
    """heatbath's periodic L × L lattice: its nodes, edge index [2L², 2] and checkerboard colours."""
    from heatbath.graphs import lattice_2d

    lattice = lattice_2d(L, periodic=True)
    return lattice, lattice.edge_index, lattice.colors()


def build(lib: str, lattice, edge_index: np.ndarray, colours: np.ndarray):
    ising, Block, SamplingSchedule, sample_states, SpinNode = _library(lib)
    if lib == "heatbath":
        nodes, edges = lattice.nodes, lattice.edges
    else:  # the same nodes (row-major), edges (same pairs, same order) and blocks, as THRML objects
        nodes = [SpinNode() for _ in range(len(colours))]
        edges = [(nodes[u], nodes[v]) for u, v in edge_index]
    weights, biases = jnp.ones(len(edges), jnp.float32), jnp.zeros(len(nodes), jnp.float32)
    model = ising.IsingEBM(nodes, edges, biases, weights, jnp.asarray(BETA_C, jnp.float32))
    members = [np.flatnonzero(colours == c) for c in range(colours.max() + 1)]
    blocks = [Block([nodes[i] for i in m]) for m in members]
    program = ising.IsingSamplingProgram(model, blocks, [])
    return program, nodes, members, Block, SamplingSchedule, sample_states


@jax.jit
def _energy_per_site(up):
    """Mean over chains of E / L² for bool states `up` [chains, L, L] (True = +1), J = 1, h = 0."""
    s = 2.0 * up.astype(jnp.float32) - 1.0
    bonds = s * jnp.roll(s, -1, axis=1) + s * jnp.roll(s, -1, axis=2)
    return -jnp.mean(jnp.sum(bonds, axis=(1, 2))) / (up.shape[1] * up.shape[2])


def _init_spins(L: int, chains: int):
    from heatbath.kernels import init_lattice

    return init_lattice(jax.random.key(0), L, chains)


def _block_init(state, members):
    """The kernel's initial lattice [L, L, chains] (int8 ±1) as per-block bool states [chains, block]."""
    L, _, chains = state.spins.shape
    flat = (state.spins > 0).reshape(L * L, chains).T
    return [flat[:, jnp.asarray(m)] for m in members]


def _rate_and_energy(inputs, seconds: float, samples, chains: int, sweeps: int):
    L = inputs[0].shape[0]
    energy = float(_energy_per_site(samples[0][:, -1].reshape(chains, L, L)))
    return sweeps * L * L * chains / seconds / 1e9, energy


def flips_per_ns(lib, inputs, init, chains: int, sweeps: int, repeats: int):
    built = build(lib, *inputs)
    seconds, out = thrml_style_time(built, _block_init(init, built[2]), chains, sweeps, repeats)
    return _rate_and_energy(inputs, seconds, out, chains, sweeps)


def batched_flips_per_ns(inputs, init, chains: int, sweeps: int, repeats: int):
    """The same model and schedule on heatbath's batched fast path (`sample_states_batched`)."""
    built = build("heatbath", *inputs)
    seconds, out = batched_time(built, _block_init(init, built[2]), sweeps, repeats)
    return _rate_and_energy(inputs, seconds, out, chains, sweeps)


def kernel_flips_per_ns(L: int, init, chains: int, sweeps: int, repeats: int, method: str = "auto"):
    """heatbath's dedicated lattice kernel, `run_lattice`, one measurement after the last sweep."""
    from heatbath.kernels import run_lattice

    run = lambda i: run_lattice(jax.random.key(1 + i), init, BETA_C, sweeps, measure_every=sweeps, method=method)  # noqa: E731
    seconds, (_, measurements) = best_time(run, repeats)
    energy = float(jnp.mean(measurements.energy[-1]))
    return sweeps * L * L * chains / seconds / 1e9, energy


def pairwise_flips_per_ns(inputs, init, chains: int, sweeps: int, repeats: int):
    """The THRML-style and the batched call with the torus route off (the pairwise kernels): two
    (flips/ns, energy) pairs."""
    vmap = with_patches(routes_off(), flips_per_ns, "heatbath", inputs, init, chains, sweeps, repeats)
    return vmap, with_patches(routes_off(), batched_flips_per_ns, inputs, init, chains, sweeps, repeats)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--L", type=int, nargs="+", default=[64, 256, 1024], help="lattice sides (even, >= 4)")
    parser.add_argument("--chains", type=int, nargs="+", default=[64])
    parser.add_argument("--sweeps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--thrml-max-L", type=int, default=512, help="skip THRML (print nan) above this side")
    parser.add_argument("--no-thrml", action="store_true")
    parser.add_argument("--kernel-only", action="store_true", help="time only heatbath's lattice kernel")
    parser.add_argument("--vmap-pairwise", action="store_true",
                        help="also time the THRML-style and batched calls with the torus route off (the pairwise kernels)")
    parser.add_argument("--sweeps-per-step", type=int, nargs="*", default=[],
                        help="also time the THRML-style call and the lattice kernel with these sweeps per step of "
                             "the multispin sweep loop (pallas_backend.SWEEPS_PER_STEP)")
    args = parser.parse_args(argv)
    for L in args.L:
        if L < 4 or L % 2:
            parser.error(f"--L must be even and at least 4 (a periodic checkerboard); got {L}")

    sweeps = args.sweeps
    print(f"2D periodic Ising lattice, J = 1, h = 0, beta_c = {BETA_C:.4g}; {sweeps} sweeps; "
          f"device {jax.devices()[0].device_kind}; jax {jax.__version__}")
    if args.kernel_only:
        print(f"{'L':>6} {'chains':>7} {'packed kernel':>14} {'E/site':>8} {'bytes kernel':>13} {'E/site':>8}  "
              "(flips/ns; mean E/site after the run)")
        for L, chains in ((L, c) for L in args.L for c in args.chains):
            init = _init_spins(L, chains)
            packed, e_packed = (math.nan, math.nan)
            if L % 64 == 0:
                packed, e_packed = kernel_flips_per_ns(L, init, chains, sweeps, args.repeats, "packed")
            byte, e_byte = kernel_flips_per_ns(L, init, chains, sweeps, args.repeats, "bytes")
            print(f"{L:>6} {chains:>7} {packed:>14.4g} {e_packed:>8.4g} {byte:>13.4g} {e_byte:>8.4g}", flush=True)
        return

    print(f"{'L':>6} {'chains':>7} {'THRML':>9} {'heatbath vmap':>14} {'ratio':>7} {'heatbath batched':>17} "
          f"{'ratio':>7} {'lattice kernel':>15} {'ratio':>7}  (flips/ns)")
    for L, chains in ((L, c) for L in args.L for c in args.chains):
        inputs = lattice_inputs(L)
        init = _init_spins(L, chains)
        skip = args.no_thrml or L > args.thrml_max_L
        theirs, e_theirs = (math.nan, math.nan) if skip else flips_per_ns("thrml", inputs, init, chains, sweeps, args.repeats)
        ours, e_ours = flips_per_ns("heatbath", inputs, init, chains, sweeps, args.repeats)
        fast, e_fast = batched_flips_per_ns(inputs, init, chains, sweeps, args.repeats)
        kernel, e_kernel = kernel_flips_per_ns(L, init, chains, sweeps, args.repeats)
        print(f"{L:>6} {chains:>7} {theirs:>9.4g} {ours:>14.4g} {ours / theirs:>7.3g} {fast:>17.4g} "
              f"{fast / theirs:>7.3g} {kernel:>15.4g} {kernel / theirs:>7.3g}", flush=True)
        for per_step in args.sweeps_per_step:
            from heatbath.kernels import pallas_backend

            (rate, energy), (kernel_rate, kernel_energy) = with_patches(  # the constant is read at trace time
                [(pallas_backend, "SWEEPS_PER_STEP", per_step)],
                lambda: (flips_per_ns("heatbath", inputs, init, chains, sweeps, args.repeats),
                         kernel_flips_per_ns(L, init, chains, sweeps, args.repeats)),
            )
            print(f"{'':>6} {per_step} sweeps per loop step: vmap {rate:.4g} flips/ns ({rate / theirs:.3g}x THRML), "
                  f"E/site {energy:.4g}; lattice kernel {kernel_rate:.4g} ({kernel_rate / theirs:.3g}x), "
                  f"E/site {kernel_energy:.4g}", flush=True)
        if args.vmap_pairwise:
            for call, (rate, energy) in zip(("vmap", "batched"), pairwise_flips_per_ns(inputs, init, chains, sweeps,
                                                                                      args.repeats)):
                print(f"{'':>6} {call}, torus route off (pairwise kernels): {rate:.4g} flips/ns "
                      f"({rate / theirs:.3g}x THRML), E/site {energy:.4g}", flush=True)
        print(f"{'':>6} sanity, mean E/site after {sweeps} sweeps: THRML {e_theirs:.4g}, heatbath vmap {e_ours:.4g}, "
              f"batched {e_fast:.4g}, kernel {e_kernel:.4g} (equilibrium, L -> inf: {-math.sqrt(2):.4g})", flush=True)


if __name__ == "__main__":
    main()
