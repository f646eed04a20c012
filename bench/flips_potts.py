"""Sampling throughput (site updates per ns) on the periodic 2D q = 5 Potts model, heatbath vs THRML.

The same model in every column, built as THRML's categorical EBM: an L × L torus of
`CategoricalNode`s (nodes row-major; each site coupled to its down and right neighbours with periodic
wrap, 2L² edges), one `CategoricalEBMFactor([Block(u), Block(v)], weights)` with `weights` of shape
[2L², 5, 5] equal to β·J·identity for every edge (J = 1, β = 1 by default, a little below the q = 5
transition β_c = ln(1 + √5) ≈ 1.174). The factor's energy is -Σ_edges W[c_u, c_v] = -βJ Σ δ(c_u, c_v),
so equal neighbours are favoured (ferromagnetic). No biases. The two checkerboard blocks are updated
with `CategoricalGibbsConditional(5)` through `FactorSamplingProgram(BlockGibbsSpec(blocks, []), ...)`.
The nodes, edges and blocks come from heatbath's `lattice_2d` and are handed to THRML index for
index, so both libraries see identical inputs; every chain starts from the same uniformly random
colouring in every column and runs `--sweeps` sweeps. Columns:

- THRML: `jax.jit(jax.vmap(lambda k, s: sample_states(k, program, schedule, s, [], [Block(nodes)])))`
  over `chains` keys (schedule: `sweeps` warm-up sweeps, one sample). Skipped with `--no-thrml`.
- heatbath vmap: the same call with heatbath's classes (THRML's import paths). On CUDA GPUs it
  recognises the uniform Potts torus and runs the Potts lattice kernel (`kernels.potts_torus`);
  `--route-off` times it (and the batched call) on the categorical kernel instead.
- heatbath batched: the same program through `heatbath.kernels.batched.sample_states_batched`.
- lattice kernel: the same model through heatbath's dedicated Potts lattice kernel,
  `heatbath.kernels.potts_lattice.run_potts_lattice(key, state, β, sweeps, q=5, J=1, measure_every=sweeps)`
  (one energy measurement after the last sweep), from the same initial colouring.

Flips/ns = sweeps × L² × chains / seconds (one "flip" = one categorical site update), from the best of
`--repeats` timed calls after one compiling call; ratios are against THRML. Both libraries run in
one process on the same device. A sanity line per size prints the mean energy per site,
-J Σ δ(c_u, c_v) / L², after the run for every column (they should agree within noise; a uniformly
random colouring has -2/5).

    .venv-bench/bin/python bench/flips_potts.py [--L 256] [--chains 1000] [--sweeps 20] [--repeats 3] [--beta 1.0]
        [--methods gather pallas] [--vmap-gather] [--forms general diagonal] [--cat-tiles 8x128x4 4x256x4]

`--methods` adds the batched call with a forced update method; `--vmap-gather` the THRML-style call
with categorical programs kept on the jax.numpy sweep (the GPU default before the categorical Pallas
kernel); `--forms general diagonal` the THRML-style and batched calls on the kernel's general update
(the default before the couplings' Potts form was recognised) and on its per-edge Potts update,
instead of the one-J update it picks for this model; `--cat-tiles` the batched call through the categorical Pallas kernel with other tiles.

(On a machine where thrml is not installed pass `--no-thrml` to time heatbath alone.)
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
from timing import batched_time, routes_off, thrml_style_time, with_patches  # noqa: E402

Q = 5  # categories (Potts states)
J = 1.0  # ferromagnetic coupling


def _library(name: str):
    if name == "thrml":
        from thrml.block_management import Block
        from thrml.block_sampling import BlockGibbsSpec, SamplingSchedule, sample_states
        from thrml.factor import FactorSamplingProgram
        from thrml.models.discrete_ebm import (
            CategoricalEBMFactor,
            CategoricalGibbsConditional,
        )
        from thrml.pgm import CategoricalNode
    else:
        from heatbath.block_management import Block
        from heatbath.block_sampling import (
            BlockGibbsSpec,
            SamplingSchedule,
            sample_states,
        )
        from heatbath.factor import FactorSamplingProgram
        from heatbath.models.discrete_ebm import (
            CategoricalEBMFactor,
            CategoricalGibbsConditional,
        )
        from heatbath.pgm import CategoricalNode
    return (Block, BlockGibbsSpec, SamplingSchedule, sample_states, FactorSamplingProgram, CategoricalEBMFactor,
            CategoricalGibbsConditional, CategoricalNode)


def lattice_inputs(L: int):
    """heatbath's periodic L × L lattice of categorical nodes: the lattice, edge index [2L², 2], colours."""
    from heatbath.graphs import lattice_2d
    from heatbath.pgm import CategoricalNode

    lattice = lattice_2d(L, periodic=True, node_type=CategoricalNode)
    return lattice, lattice.edge_index, lattice.colors()


def build(lib: str, lattice, edge_index: np.ndarray, colours: np.ndarray, beta: float):
    (Block, BlockGibbsSpec, SamplingSchedule, sample_states, FactorSamplingProgram, CategoricalEBMFactor,
     CategoricalGibbsConditional, CategoricalNode) = _library(lib)
    if lib == "heatbath":
        nodes = lattice.nodes
    else:  # the same nodes (row-major), edges (same pairs, same order) and blocks, as THRML objects
        nodes = [CategoricalNode() for _ in range(len(colours))]
    u = Block([nodes[i] for i in edge_index[:, 0]])
    v = Block([nodes[i] for i in edge_index[:, 1]])
    # Energy -Σ W[c_u, c_v]: a positive diagonal favours equal neighbours.
    weights = jnp.broadcast_to(beta * J * jnp.eye(Q, dtype=jnp.float32), (len(edge_index), Q, Q))
    factor = CategoricalEBMFactor([u, v], weights)
    members = [np.flatnonzero(colours == c) for c in range(colours.max() + 1)]
    blocks = [Block([nodes[i] for i in m]) for m in members]
    spec = BlockGibbsSpec(blocks, [])
    program = FactorSamplingProgram(spec, [CategoricalGibbsConditional(Q) for _ in spec.free_blocks], [factor], [])
    return program, nodes, members, Block, SamplingSchedule, sample_states


@jax.jit
def _energy_per_site(c):
    """Mean over chains of -J Σ δ(c_u, c_v) / L² for colourings `c` [chains, L, L]."""
    same = (c == jnp.roll(c, -1, axis=1)).astype(jnp.float32) + (c == jnp.roll(c, -1, axis=2)).astype(jnp.float32)
    return -J * jnp.mean(jnp.sum(same, axis=(1, 2))) / (c.shape[1] * c.shape[2])


def _init_states(L: int, chains: int):
    """The same uniformly random colouring for every column: uint8 [chains, L²] (row-major sites)."""
    return jax.random.randint(jax.random.key(0), (chains, L * L), 0, Q).astype(jnp.uint8)


def _block_init(init, members):
    return [init[:, jnp.asarray(m)] for m in members]


def _rate_and_energy(inputs, seconds: float, samples, chains: int, sweeps: int):
    L = inputs[0].shape[0]
    energy = float(_energy_per_site(samples[0][:, -1].reshape(chains, L, L)))
    return sweeps * L * L * chains / seconds / 1e9, energy


def flips_per_ns(lib, inputs, beta: float, init, chains: int, sweeps: int, repeats: int):
    built = build(lib, *inputs, beta)
    seconds, out = thrml_style_time(built, _block_init(init, built[2]), chains, sweeps, repeats)
    return _rate_and_energy(inputs, seconds, out, chains, sweeps)


def batched_flips_per_ns(inputs, beta: float, init, chains: int, sweeps: int, repeats: int, **options):
    """The same model and schedule on heatbath's batched fast path (`sample_states_batched`)."""
    built = build("heatbath", *inputs, beta)
    seconds, out = batched_time(built, _block_init(init, built[2]), sweeps, repeats, **options)
    return _rate_and_energy(inputs, seconds, out, chains, sweeps)


def kernel_flips_per_ns(L: int, beta: float, init, chains: int, sweeps: int, repeats: int):
    """heatbath's dedicated Potts lattice kernel on the same model and initial colouring."""
    from timing import best_time

    from heatbath.kernels.potts_lattice import PottsLatticeState, run_potts_lattice

    state = PottsLatticeState(init.T.reshape(L, L, chains))
    run = lambda i: run_potts_lattice(jax.random.key(1 + i), state, beta, sweeps, q=Q, J=J, measure_every=sweeps)  # noqa: E731
    seconds, (_, energy) = best_time(run, repeats)
    return sweeps * L * L * chains / seconds / 1e9, float(jnp.mean(energy[-1]))


def check_pallas_equals_jnp() -> None:
    """On a GPU: the native Pallas Potts kernel gives the same states as the jax.numpy update."""
    from heatbath.kernels.potts_lattice import init_potts_lattice, run_potts_lattice

    state = init_potts_lattice(jax.random.key(0), 64, 200, Q)
    runs = [run_potts_lattice(jax.random.key(1), state, 1.0, 10, q=Q, backend=b)[0].states for b in ("pallas", "jnp")]
    print(f"native Pallas Potts kernel == jax.numpy update (L=64, 200 chains, 10 sweeps): "
          f"{bool(jnp.array_equal(runs[0], runs[1]))}", flush=True)


def vmap_gather_flips_per_ns(inputs, beta: float, init, chains: int, sweeps: int, repeats: int):
    """The THRML-style call with categorical programs kept on the jax.numpy sweep (method "gather")."""
    from heatbath.kernels import pairwise_sweep

    chosen = pairwise_sweep.chosen_method
    gather = lambda method, program, tables, *rest: (  # noqa: E731
        "gather" if tables.kind == "categorical" and method == "auto" else chosen(method, program, tables, *rest))
    return with_patches([(pairwise_sweep, "chosen_method", gather), *routes_off()], flips_per_ns, "heatbath", inputs, beta,
                        init, chains, sweeps, repeats)


def route_off_flips_per_ns(inputs, beta: float, init, chains: int, sweeps: int, repeats: int):
    """The THRML-style and the batched call with the Potts torus route off (the categorical kernel, as
    before the route): two (flips/ns, energy) pairs."""
    return both_calls_with(routes_off(), inputs, beta, init, chains, sweeps, repeats)


def both_calls_with(patches, inputs, beta: float, init, chains: int, sweeps: int, repeats: int):
    """The THRML-style and the batched call with `patches` (`timing.with_patches`): two (flips/ns,
    energy) pairs."""
    vmap = with_patches(patches, flips_per_ns, "heatbath", inputs, beta, init, chains, sweeps, repeats)
    return vmap, with_patches(patches, batched_flips_per_ns, inputs, beta, init, chains, sweeps, repeats)


def told_form_flips_per_ns(form: str, inputs, beta: float, init, chains: int, sweeps: int, repeats: int):
    """The THRML-style and the batched call with the categorical kernel told less about the couplings
    than it finds (`coupling_structure.known_coupling_forms` gives one J here): "general" (nothing: K
    loads per neighbour) or "diagonal" (per-edge Potts: one load). Two (flips/ns, energy) pairs."""
    from heatbath.kernels import coupling_structure

    told = {"general": None, "diagonal": coupling_structure.DIAGONAL}[form]
    forms = lambda program, tables: (told,) * len(tables.sources)  # noqa: E731
    patches = [(coupling_structure, "known_coupling_forms", forms), *routes_off()]  # read through call_forms
    return both_calls_with(patches, inputs, beta, init, chains, sweeps, repeats)


def time_categorical_tiles(inputs, beta: float, init, chains: int, sweeps: int, repeats: int, tiles, theirs: float) -> None:
    from heatbath.kernels import pallas_categorical

    saved = (pallas_categorical.TILE_NODES, pallas_categorical.TILE_CHAINS, pallas_categorical.NUM_WARPS)
    for tile in tiles:
        nodes, tile_chains, warps = tile.split("x")
        pallas_categorical.TILE_NODES, pallas_categorical.TILE_CHAINS, pallas_categorical.NUM_WARPS = (
            int(nodes), int(tile_chains), int(warps))
        jax.clear_caches()
        rate, _ = batched_flips_per_ns(inputs, beta, init, chains, sweeps, repeats, method="pallas")
        print(f"{'':>6} batched, categorical kernel tile {tile}: {rate:.4g} flips/ns ({rate / theirs:.3g}x THRML)", flush=True)
    pallas_categorical.TILE_NODES, pallas_categorical.TILE_CHAINS, pallas_categorical.NUM_WARPS = saved
    jax.clear_caches()


def time_tiles(L: int, beta: float, init, chains: int, sweeps: int, repeats: int, tiles) -> None:
    from heatbath.kernels import potts_pallas

    for tile in tiles:
        potts_pallas.TILE_SITES, potts_pallas.TILE_CHAINS, potts_pallas.NUM_WARPS = (int(x) for x in tile.split("x"))
        jax.clear_caches()
        rate, _ = kernel_flips_per_ns(L, beta, init, chains, sweeps, repeats)
        print(f"{'':>6} lattice kernel, tile {tile} (sites x chains x warps): {rate:.4g} flips/ns", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--L", type=int, nargs="+", default=[256], help="lattice sides (even, >= 4)")
    parser.add_argument("--chains", type=int, nargs="+", default=[1000])
    parser.add_argument("--sweeps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--no-thrml", action="store_true")
    parser.add_argument("--kernel-sweeps", type=int, default=0,
                        help="sweeps for the lattice kernel column (default: --sweeps); flips/ns does not depend on it "
                             "beyond the fixed cost per call")
    parser.add_argument("--tiles", nargs="*", default=[],
                        help="also time the lattice kernel's Pallas tiles, each SITESxCHAINSxWARPS (GPU only)")
    parser.add_argument("--methods", nargs="*", default=[], help="also time the batched call with these update methods")
    parser.add_argument("--cat-tiles", nargs="*", default=[],
                        help="also time the batched call through the categorical Pallas kernel with these tiles, each "
                             "NODESxCHAINSxWARPS (e.g. 8x128x4; GPU only)")
    parser.add_argument("--vmap-gather", action="store_true",
                        help="also time the THRML-style call with the categorical update forced to the jax.numpy sweep "
                             "(the GPU default before the categorical Pallas kernel)")
    parser.add_argument("--forms", nargs="*", default=[], choices=["general", "diagonal"],
                        help="also time the THRML-style and batched calls with the categorical kernel's general update "
                             "or its per-edge Potts update instead of the one-J update it picks here")
    parser.add_argument("--route-off", action="store_true",
                        help="also time the THRML-style and batched calls with the Potts torus route off (on GPUs they "
                             "run the Potts lattice kernel; off, the categorical kernel)")
    args = parser.parse_args(argv)
    if jax.default_backend() == "gpu":
        check_pallas_equals_jnp()
    for L in args.L:
        if L < 4 or L % 2:
            parser.error(f"--L must be even and at least 4 (a periodic checkerboard); got {L}")

    sweeps = args.sweeps
    print(f"2D periodic Potts lattice, q = {Q}, J = {J:.4g}, beta = {args.beta:.4g} (beta_c = "
          f"{math.log(1 + math.sqrt(Q)):.4g}); {sweeps} sweeps; device {jax.devices()[0].device_kind}; "
          f"jax {jax.__version__}")
    print(f"{'L':>6} {'chains':>7} {'THRML':>9} {'heatbath vmap':>14} {'ratio':>7} {'heatbath batched':>17} "
          f"{'ratio':>7} {'lattice kernel':>15} {'ratio':>7}  (flips/ns)")
    for L in args.L:
        inputs = lattice_inputs(L)
        for chains in args.chains:
            init = _init_states(L, chains)
            theirs, e_theirs = ((math.nan, math.nan) if args.no_thrml
                                else flips_per_ns("thrml", inputs, args.beta, init, chains, sweeps, args.repeats))
            ours, e_ours = flips_per_ns("heatbath", inputs, args.beta, init, chains, sweeps, args.repeats)
            fast, e_fast = batched_flips_per_ns(inputs, args.beta, init, chains, sweeps, args.repeats)
            kernel, e_kernel = kernel_flips_per_ns(L, args.beta, init, chains, args.kernel_sweeps or sweeps, args.repeats)
            print(f"{L:>6} {chains:>7} {theirs:>9.4g} {ours:>14.4g} {ours / theirs:>7.3g} {fast:>17.4g} "
                  f"{fast / theirs:>7.3g} {kernel:>15.4g} {kernel / theirs:>7.3g}", flush=True)
            for method in args.methods:
                rate, energy = batched_flips_per_ns(inputs, args.beta, init, chains, sweeps, args.repeats, method=method)
                print(f"{'':>6} batched, method={method}: {rate:.4g} flips/ns ({rate / theirs:.3g}x THRML), "
                      f"mean E/site {energy:.4g}", flush=True)
            if args.vmap_gather:
                rate, energy = vmap_gather_flips_per_ns(inputs, args.beta, init, chains, sweeps, args.repeats)
                print(f"{'':>6} vmap, jax.numpy sweep: {rate:.4g} flips/ns ({rate / theirs:.3g}x THRML), mean E/site {energy:.4g}",
                      flush=True)
            if args.route_off:
                for call, (rate, energy) in zip(("vmap", "batched"), route_off_flips_per_ns(
                        inputs, args.beta, init, chains, sweeps, args.repeats)):
                    print(f"{'':>6} {call}, Potts torus route off: {rate:.4g} flips/ns ({rate / theirs:.3g}x THRML), "
                          f"mean E/site {energy:.4g}", flush=True)
            for form in args.forms:
                for call, (rate, energy) in zip(("vmap", "batched"), told_form_flips_per_ns(
                        form, inputs, args.beta, init, chains, sweeps, args.repeats)):
                    print(f"{'':>6} {call}, {form} categorical update: {rate:.4g} flips/ns ({rate / theirs:.3g}x THRML), "
                          f"mean E/site {energy:.4g}", flush=True)
            time_categorical_tiles(inputs, args.beta, init, chains, sweeps, args.repeats, args.cat_tiles, theirs)
            print(f"{'':>6} sanity, mean E/site after {sweeps} sweeps: THRML {e_theirs:.4g}, heatbath vmap "
                  f"{e_ours:.4g}, batched {e_fast:.4g}, lattice kernel {e_kernel:.4g} (after {args.kernel_sweeps or sweeps}; "
                  f"random colouring: {-2 * J / Q:.4g})", flush=True)
            time_tiles(L, args.beta, init, chains, args.kernel_sweeps or sweeps, args.repeats, args.tiles)


if __name__ == "__main__":
    main()
