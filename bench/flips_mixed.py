"""Sampling throughput on a heterogeneous discrete model (spins and categorical nodes of two category
counts), heatbath vs THRML, in one process.

The model is an L × L torus (L even) coloured as a checkerboard. Sites with i + j even are
`SpinNode`s; the others are `CategoricalNode`s with 3 states on even rows and 5 on odd rows, so each
spin has two 3-state and two 5-state neighbours. Every edge couples a spin s to a category c with
energy -s W_e[c] (one `DiscreteEBMFactor` per category count, weights N(0, 0.5²)); every node has a
bias (spins N(0, 0.3²), categories N(0, 0.5²) per state). Seed 0, the same inputs in every column.
Three blocks (spins, 3-state, 5-state nodes), 2L² edges, `--sweeps` sweeps from the same random
initial state. Columns:

- THRML: `jax.jit(jax.vmap(lambda k, s: sample_states(k, program, schedule, s, [], blocks)))` over
  `chains` keys, observing the three blocks. Skipped with `--no-thrml`.
- heatbath vmap: the same call with heatbath's classes (THRML's import paths). Such programs run on
  heatbath's categorical kernels, spins as categories 0 (down) and 1 (up).
- heatbath generic (`--generic`): the same call with heatbath's fast paths off: the generic sweep loop
  that every such program ran before, vmapped per chain as THRML's is.
- heatbath batched: the same program through `heatbath.kernels.batched.sample_states_batched`.

Flips/ns = sweeps × L² × chains / seconds (one "flip" = one site update, spin or category), from the
best of `--repeats` timed calls after one compiling call; ratios are against THRML. A sanity line
per size prints, for every column, the fraction of spins up and the mean of the 3- and 5-state
categories after the run (they should agree within noise).

    .venv-bench/bin/python bench/flips_mixed.py [--L 32] [--chains 64] [--sweeps 20] [--repeats 3] [--no-thrml] [--generic]
        [--select-tails 0 2 5] [--cat-tiles 8x128x4 16x128x4]

`--select-tails` adds the THRML-style call with the categorical kernel's `SELECT_TAIL` set to each
value (sources of up to that many categories read by per-node loads and selects; 0: gathers only);
`--cat-tiles` the same call with other tiles of the categorical kernel (nodes x chains x warps).
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from timing import best_time, print_rates, with_patches  # noqa: E402

COUNTS = (3, 5)  # categories of the categorical sites on even and on odd rows


def _library(name: str):
    if name == "thrml":
        from thrml.block_management import Block
        from thrml.block_sampling import BlockGibbsSpec, SamplingSchedule, sample_states
        from thrml.factor import FactorSamplingProgram
        from thrml.models.discrete_ebm import (CategoricalEBMFactor, CategoricalGibbsConditional, DiscreteEBMFactor,
                                               SpinEBMFactor, SpinGibbsConditional)
        from thrml.pgm import CategoricalNode, SpinNode
    else:
        from heatbath.block_management import Block
        from heatbath.block_sampling import BlockGibbsSpec, SamplingSchedule, sample_states
        from heatbath.factor import FactorSamplingProgram
        from heatbath.models.discrete_ebm import (CategoricalEBMFactor, CategoricalGibbsConditional, DiscreteEBMFactor,
                                                  SpinEBMFactor, SpinGibbsConditional)
        from heatbath.pgm import CategoricalNode, SpinNode
    return (Block, BlockGibbsSpec, SamplingSchedule, sample_states, FactorSamplingProgram, CategoricalEBMFactor,
            CategoricalGibbsConditional, DiscreteEBMFactor, SpinEBMFactor, SpinGibbsConditional, CategoricalNode, SpinNode)


class Inputs:
    """The model's numbers, shared by both libraries: site groups (row-major site ids), edges per
    category count as (spin site, categorical site) pairs, and seed-0 weights."""

    def __init__(self, L: int):
        if L % 2:
            raise SystemExit("--L must be even (a checkerboard on a torus)")
        i, j = np.divmod(np.arange(L * L), L)
        self.L = L
        self.spins = np.flatnonzero((i + j) % 2 == 0)
        self.cats = [np.flatnonzero(((i + j) % 2 == 1) & (i % 2 == r)) for r in (0, 1)]
        right, down = i * L + (j + 1) % L, ((i + 1) % L) * L + j
        pairs = np.concatenate([np.stack([np.arange(L * L), right], 1), np.stack([np.arange(L * L), down], 1)])
        pairs = np.where(((i + j) % 2 == 0)[pairs[:, :1]], pairs, pairs[:, ::-1])  # (spin, category)
        row_parity = pairs[:, 1] // L % 2
        self.edges = [pairs[row_parity == r] for r in (0, 1)]
        rng = np.random.default_rng(0)
        self.spin_bias = rng.normal(0, 0.3, len(self.spins)).astype(np.float32)
        self.cat_bias = [rng.normal(0, 0.5, (len(c), k)).astype(np.float32) for c, k in zip(self.cats, COUNTS)]
        self.couplings = [rng.normal(0, 0.5, (len(e), k)).astype(np.float32) for e, k in zip(self.edges, COUNTS)]


def build(lib: str, inputs: Inputs):
    (Block, BlockGibbsSpec, SamplingSchedule, sample_states, FactorSamplingProgram, CategoricalEBMFactor,
     CategoricalGibbsConditional, DiscreteEBMFactor, SpinEBMFactor, SpinGibbsConditional, CategoricalNode,
     SpinNode) = _library(lib)
    nodes = [None] * (inputs.L * inputs.L)
    for s in inputs.spins:
        nodes[s] = SpinNode()
    for group in inputs.cats:
        for c in group:
            nodes[c] = CategoricalNode()
    pick = lambda ids: Block([nodes[i] for i in ids])  # noqa: E731
    factors = [SpinEBMFactor([pick(inputs.spins)], jnp.asarray(inputs.spin_bias))]
    for group, bias, edges, w in zip(inputs.cats, inputs.cat_bias, inputs.edges, inputs.couplings):
        factors.append(CategoricalEBMFactor([pick(group)], jnp.asarray(bias)))
        factors.append(DiscreteEBMFactor([pick(edges[:, 0])], [pick(edges[:, 1])], jnp.asarray(w)))
    blocks = [pick(inputs.spins)] + [pick(group) for group in inputs.cats]
    spec = BlockGibbsSpec(blocks, [])
    samplers = [SpinGibbsConditional()] + [CategoricalGibbsConditional(k) for k in COUNTS]
    program = FactorSamplingProgram(spec, samplers, factors, [])
    return program, blocks, SamplingSchedule, sample_states


def initial_states(inputs: Inputs, chains: int) -> list:
    """The same random state for every column: spins bool, categories uint8, `[chains, n]` per block."""
    keys = jax.random.split(jax.random.key(0), 3)
    out = [jax.random.bernoulli(keys[0], 0.5, (chains, len(inputs.spins)))]
    out += [jax.random.randint(k, (chains, len(c)), 0, q).astype(jnp.uint8) for k, c, q in zip(keys[1:], inputs.cats, COUNTS)]
    return out


def summary(samples) -> tuple[float, float, float]:
    """Fraction of spins up and the mean 3- and 5-state category, over chains and nodes, at the last sample."""
    return tuple(float(jnp.mean(s[:, -1].astype(jnp.float32))) for s in samples)


def thrml_style(lib: str, inputs: Inputs, init, chains: int, sweeps: int, repeats: int):
    program, blocks, SamplingSchedule, sample_states = build(lib, inputs)
    schedule = SamplingSchedule(sweeps, 1, 1)
    run = jax.jit(jax.vmap(lambda k, s: sample_states(k, program, schedule, s, [], blocks)))
    keys = jax.random.split(jax.random.key(1), chains)
    return best_time(lambda i: run(keys, init), repeats)


def batched(inputs: Inputs, init, chains: int, sweeps: int, repeats: int):
    from heatbath.kernels.batched import sample_states_batched

    program, blocks, SamplingSchedule, _ = build("heatbath", inputs)
    schedule = SamplingSchedule(sweeps, 1, 1)
    keys = [jax.random.key(1 + i) for i in range(repeats + 1)]
    return best_time(lambda i: sample_states_batched(keys[i], program, schedule, init, [], blocks), repeats)


def generic(inputs: Inputs, init, chains: int, sweeps: int, repeats: int):
    """The THRML-style call with heatbath's fast paths off (every program on the generic loop)."""
    from heatbath.kernels import pairwise_tables

    off = lambda program: (None, "fast paths off for this benchmark")  # noqa: E731
    return with_patches([(pairwise_tables, "_pairwise_kind", off)], thrml_style, "heatbath", inputs, init, chains, sweeps,
                        repeats)


def with_select_tail(tail: int, inputs: Inputs, init, chains: int, sweeps: int, repeats: int):
    """The THRML-style call with the categorical kernel reading sources of up to `tail` categories by
    per-node loads and selects, larger ones by per-chain gathers (`pallas_categorical.SELECT_TAIL`)."""
    from heatbath.kernels import pallas_categorical

    return with_patches([(pallas_categorical, "SELECT_TAIL", tail)], thrml_style, "heatbath", inputs, init, chains, sweeps,
                        repeats)


def with_tiles(tile: str, inputs: Inputs, init, chains: int, sweeps: int, repeats: int):
    """The THRML-style call with the categorical kernel's tiles set to `tile`, "nodes x chains x warps"."""
    from heatbath.kernels import pallas_categorical

    nodes, tile_chains, warps = (int(x) for x in tile.split("x"))
    patches = [(pallas_categorical, "TILE_NODES", nodes), (pallas_categorical, "TILE_CHAINS", tile_chains),
               (pallas_categorical, "NUM_WARPS", warps)]
    return with_patches(patches, thrml_style, "heatbath", inputs, init, chains, sweeps, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--L", type=int, nargs="+", default=[32])
    parser.add_argument("--chains", type=int, nargs="+", default=[64])
    parser.add_argument("--sweeps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-thrml", action="store_true")
    parser.add_argument("--generic", action="store_true", help="also time heatbath with its fast paths off")
    parser.add_argument("--select-tails", type=int, nargs="*", default=[],
                        help="also time the THRML-style call with these SELECT_TAIL values of the categorical kernel")
    parser.add_argument("--cat-tiles", nargs="*", default=[],
                        help="also time the THRML-style call with these categorical kernel tiles, e.g. 8x128x4")
    args = parser.parse_args()
    print(f"device {jax.devices()[0].device_kind}; {args.sweeps} sweeps; flips/ns (best of {args.repeats})", flush=True)
    for L in args.L:
        inputs = Inputs(L)
        for chains in args.chains:
            init = initial_states(inputs, chains)
            flips = args.sweeps * L * L * chains
            columns = {}
            if not args.no_thrml:
                columns["THRML"] = thrml_style("thrml", inputs, init, chains, args.sweeps, args.repeats)
            columns["heatbath vmap"] = thrml_style("heatbath", inputs, init, chains, args.sweeps, args.repeats)
            if args.generic:
                columns["heatbath generic"] = generic(inputs, init, chains, args.sweeps, args.repeats)
            columns["heatbath batched"] = batched(inputs, init, chains, args.sweeps, args.repeats)
            for tail in args.select_tails:
                columns[f"vmap, selects up to {tail}"] = with_select_tail(tail, inputs, init, chains, args.sweeps, args.repeats)
            for tile in args.cat_tiles:
                columns[f"vmap, tiles {tile}"] = with_tiles(tile, inputs, init, chains, args.sweeps, args.repeats)
            print_rates(f"L={L} chains={chains}", columns, flips)
            sanity = "; ".join(f"{name} " + " / ".join(f"{v:.3f}" for v in summary(out)) for name, (_, out) in columns.items())
            print(f"   spins up / mean 3-state / mean 5-state: {sanity}", flush=True)


if __name__ == "__main__":
    main()
