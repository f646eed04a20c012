"""Sampling throughput (spin flips per ns) on Pegasus P(14), heatbath vs THRML, THRML-style calls.

The same Ising model in both libraries: the Pegasus P(14) graph (4,264 spins, 30,404 edges),
couplings N(0, 0.3²), biases N(0, 1), β = 1, the same colouring into independent blocks (heatbath's
`color_graph`, applied to both), the same schedule (`n_sweeps` warm-up sweeps, one sample), and the
same call: `jax.jit(jax.vmap(lambda k: sample_states(k, program, schedule, init, [], [Block(nodes)])))`
over `chains` keys. Flips/ns = sweeps × spins × chains / seconds, from the best of `--repeats`
timed calls after one compiling call. Both libraries run in one process on the same device. A third
column runs the same program through heatbath's batched fast path (`sample_states_batched`: chains
as the contiguous axis, counter-based random words), the one-line alternative to the vmap call.

    .venv-bench/bin/python bench/flips_pegasus.py [--chains 100 1000 10000] [--sweeps 100] [--repeats 3]

(On a machine where thrml is not installed pass `--no-thrml` to time heatbath alone.)
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np


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


def build(lib: str, edge_index: np.ndarray, n_nodes: int, colours: np.ndarray, biases, weights):
    ising, Block, SamplingSchedule, sample_states, SpinNode = _library(lib)
    nodes = [SpinNode() for _ in range(n_nodes)]
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
    jax.block_until_ready(run(keys))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run(keys))
        best = min(best, time.perf_counter() - start)
    return sweeps * len(nodes) * chains / best / 1e9


def batched_flips_per_ns(model_inputs, chains: int, sweeps: int, repeats: int) -> float:
    """The same model and schedule on heatbath's batched fast path (`sample_states_batched`)."""
    from heatbath.kernels.batched import sample_states_batched

    program, init, nodes, Block, SamplingSchedule, _ = build("heatbath", *model_inputs)
    schedule = SamplingSchedule(sweeps, 1, 1)
    init = [jnp.zeros((chains,) + x.shape, x.dtype) for x in init]
    observed = [Block(nodes)]  # built once, as a sampling loop would
    run = lambda k: sample_states_batched(k, program, schedule, init, [], observed)  # noqa: E731
    jax.block_until_ready(run(jax.random.key(1)))
    best = float("inf")
    for i in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run(jax.random.key(2 + i)))
        best = min(best, time.perf_counter() - start)
    return sweeps * len(nodes) * chains / best / 1e9


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, nargs="+", default=[100, 1000, 10000])
    parser.add_argument("--sweeps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-thrml", action="store_true")
    args = parser.parse_args(argv)

    from heatbath.graphs import color_graph, pegasus_edge_index

    n_nodes, edge_index = pegasus_edge_index(14)
    colours = color_graph(n_nodes, edge_index)
    rng = np.random.default_rng(0)
    inputs = (edge_index, n_nodes, colours, rng.normal(0, 1, n_nodes).astype(np.float32),
              rng.normal(0, 0.3, len(edge_index)).astype(np.float32))
    print(f"Pegasus P(14): {n_nodes} spins, {len(edge_index)} edges, {colours.max() + 1} colours; "
          f"{args.sweeps} sweeps; device {jax.devices()[0].device_kind}; jax {jax.__version__}")
    print(f"{'chains':>8} {'THRML':>9} {'heatbath vmap':>14} {'ratio':>7} {'heatbath batched':>17} {'ratio':>7}  (flips/ns)")
    for chains in args.chains:
        theirs = float("nan") if args.no_thrml else flips_per_ns("thrml", inputs, chains, args.sweeps, args.repeats)
        ours = flips_per_ns("heatbath", inputs, chains, args.sweeps, args.repeats)
        fast = batched_flips_per_ns(inputs, chains, args.sweeps, args.repeats)
        print(f"{chains:>8} {theirs:>9.4g} {ours:>14.4g} {ours / theirs:>7.3g} {fast:>17.4g} {fast / theirs:>7.3g}", flush=True)


if __name__ == "__main__":
    main()
