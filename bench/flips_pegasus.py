"""Sampling throughput (spin flips per ns) on Pegasus P(14), heatbath vs THRML, THRML-style calls.

The same Ising model in both libraries: the Pegasus P(14) graph (4,264 spins, 30,404 edges),
couplings N(0, 0.3²), biases N(0, 1), β = 1, the same colouring into independent blocks (heatbath's
`color_graph`, applied to both), the same schedule (`n_sweeps` warm-up sweeps, one sample), and the
same call: `jax.jit(jax.vmap(lambda k: sample_states(k, program, schedule, init, [], [Block(nodes)])))`
over `chains` keys. Flips/ns = sweeps × spins × chains / seconds, from the best of `--repeats`
timed calls after one compiling call. Both libraries run in one process on the same device. A third
column runs the same program through heatbath's batched fast path (`sample_states_batched`: chains
as the contiguous axis, counter-based random words), the one-line alternative to the vmap call.

    .venv-bench/bin/python bench/flips_pegasus.py [--chains 100 1000 10000] [--sweeps 100] [--repeats 3] [--methods gather]
        [--sweeps-per-step 1 8]

(On a machine where thrml is not installed pass `--no-thrml` to time heatbath alone.)
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from timing import batched_time, best_time, with_patches  # noqa: E402


def _library(name: str):
    if name == "thrml":
        import thrml.models.ising as ising
        from thrml.block_management import Block
        from thrml.block_sampling import SamplingSchedule, sample_states
        from thrml.pgm import SpinNode
    else:
        import heatbath.models.ising as ising
        from heatbath.block_management import Block
        from heatbath.block_sampling import SamplingSchedule, sample_states
        from heatbath.pgm import SpinNode
    return ising, Block, SamplingSchedule, sample_states, SpinNode


def build(lib: str, edge_index: np.ndarray, n_nodes: int, colours: np.ndarray, biases, weights, nodes=None):
    """The Ising program of the inputs in library `lib`, on new nodes or on `nodes` (a previous build's)."""
    ising, Block, SamplingSchedule, sample_states, SpinNode = _library(lib)
    nodes = [SpinNode() for _ in range(n_nodes)] if nodes is None else nodes
    edges = [(nodes[u], nodes[v]) for u, v in edge_index]
    model = ising.IsingEBM(nodes, edges, jnp.asarray(biases), jnp.asarray(weights), jnp.asarray(1.0))
    blocks = [Block([nodes[i] for i in np.flatnonzero(colours == c)]) for c in range(colours.max() + 1)]
    program = ising.IsingSamplingProgram(model, blocks, [])
    init = [jnp.zeros(len(b), jnp.bool_) for b in blocks]
    return program, init, nodes, Block, SamplingSchedule, sample_states


def flips_per_ns(lib, model_inputs, chains: int, sweeps: int, repeats: int) -> float:
    program, init, nodes, Block, SamplingSchedule, sample_states = build(lib, *model_inputs)
    schedule = SamplingSchedule(sweeps, 1, 1)
    run = jax.jit(jax.vmap(lambda k: sample_states(k, program, schedule, init, [], [Block(nodes)])))
    keys = jax.random.split(jax.random.key(1), chains)
    seconds, _ = best_time(lambda i: run(keys), repeats)
    return sweeps * len(nodes) * chains / seconds / 1e9


def batched_flips_per_ns(model_inputs, chains: int, sweeps: int, repeats: int, samples: bool = False, **options):
    """The same model and schedule on heatbath's batched fast path (`sample_states_batched`):
    flips/ns, or (flips/ns, the first call's samples) with `samples=True`."""
    program, init, nodes, Block, SamplingSchedule, sample_states = build("heatbath", *model_inputs)
    states = [jnp.zeros((chains,) + x.shape, x.dtype) for x in init]
    built = (program, nodes, None, Block, SamplingSchedule, sample_states)
    seconds, out = batched_time(built, states, sweeps, repeats, **options)
    rate = sweeps * len(nodes) * chains / seconds / 1e9
    return (rate, out) if samples else rate


def pegasus_inputs():
    """The benchmark model: P(14) edges, its colouring, biases N(0, 1) and couplings N(0, 0.3²), seed 0."""
    from heatbath.graphs import color_graph, pegasus_edge_index

    n_nodes, edge_index = pegasus_edge_index(14)
    colours = color_graph(n_nodes, edge_index)
    rng = np.random.default_rng(0)
    return (edge_index, n_nodes, colours, rng.normal(0, 1, n_nodes).astype(np.float32),
            rng.normal(0, 0.3, len(edge_index)).astype(np.float32))


def print_table(inputs, chain_counts, sweeps: int, repeats: int, no_thrml: bool, methods=()) -> None:
    """One row per chain count: THRML, heatbath THRML-style, heatbath batched, and the two ratios;
    then the batched call with each of `methods` forced (e.g. "gather", the pre-tensor-core GPU path)."""
    extra = "".join(f" {'batched ' + m:>17} {'ratio':>7}" for m in methods)
    print(f"{'chains':>8} {'THRML':>9} {'heatbath vmap':>14} {'ratio':>7} {'heatbath batched':>17} {'ratio':>7}{extra}  (flips/ns)")
    for chains in chain_counts:
        theirs = float("nan") if no_thrml else flips_per_ns("thrml", inputs, chains, sweeps, repeats)
        ours = flips_per_ns("heatbath", inputs, chains, sweeps, repeats)
        fast = batched_flips_per_ns(inputs, chains, sweeps, repeats)
        forced = [batched_flips_per_ns(inputs, chains, sweeps, repeats, method=m) for m in methods]
        cells = "".join(f" {f:>17.4g} {f / theirs:>7.3g}" for f in forced)
        print(f"{chains:>8} {theirs:>9.4g} {ours:>14.4g} {ours / theirs:>7.3g} {fast:>17.4g} {fast / theirs:>7.3g}{cells}", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--sweeps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-thrml", action="store_true")
    parser.add_argument("--methods", nargs="*", default=[], help="also time the batched call with these update methods")
    parser.add_argument("--sweeps-per-step", type=int, nargs="*", default=[],
                        help="also time the THRML-style call with these sweeps per step of the GPU sweep loop "
                             "(pallas_backend.SWEEPS_PER_STEP)")
    args = parser.parse_args(argv)

    inputs = pegasus_inputs()
    edge_index, n_nodes, colours = inputs[:3]
    print(f"Pegasus P(14): {n_nodes} spins, {len(edge_index)} edges, {colours.max() + 1} colours; "
          f"{args.sweeps} sweeps; device {jax.devices()[0].device_kind}; jax {jax.__version__}")
    print_table(inputs, args.chains, args.sweeps, args.repeats, args.no_thrml, args.methods)
    for per_step in args.sweeps_per_step:
        from heatbath.kernels import pallas_backend

        for chains in args.chains:  # the constant is read at trace time
            rate = with_patches([(pallas_backend, "SWEEPS_PER_STEP", per_step)], flips_per_ns, "heatbath", inputs, chains,
                                args.sweeps, args.repeats)
            print(f"{chains:>8} chains, {per_step} sweeps per loop step: THRML-style {rate:.4g} flips/ns", flush=True)


if __name__ == "__main__":
    main()
