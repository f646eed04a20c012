"""One KL-gradient estimate of THRML's training example, heatbath vs THRML, in one process.

THRML's documentation trains an Ising model on Pegasus P(14) (4,264 spins, 30,404 edges): 500 random
data nodes, a batch of 50 data rows, `SamplingSchedule(5, 100, 5)` for both phases, 50 chains for
the free (negative) phase and one chain per data row for the clamped (positive) phase, and calls
`estimate_kl_grad` for the bias gradient of every node and the weight gradient of every edge. Both
libraries get the same model (biases N(0, 1), couplings N(0, 0.3²), seed 0), the same colouring
(heatbath's `color_graph`, restricted to the latent nodes for the clamped phase) and the same call
under `jax.jit`. Milliseconds per call: the best of `--repeats` calls after a compiling one.

    .venv-bench/bin/python bench/kl_grad.py [--repeats 3] [--batch 50] [--positive-chains 1] [--no-thrml] [--train-api] [--factorized]
        [--potts] [--potts-rows] [--unpaired]

`--train-api` also times heatbath's own `heatbath.train.estimate_kl_grad` on the same model and data
sizes (it serves any factorised EBM: ∂E/∂θ by autodiff at every sample, or from the samples' moments
for an `IsingEBM`, as here). `--factorized` times it with the same model as a `FactorizedEBM` of two
`SpinEBMFactor`s, `--potts` on a q = 5 Potts model (heatbath alone: THRML trains Ising models only;
its latent nodes read only data nodes, so its positive phase runs its sweeps side by side and does
not pair), `--potts-rows` on the same model with every other row a data row (latent nodes coupled
along their rows: both phases sweep and pair).
`--unpaired` times heatbath's calls again with the two phases one after the other instead of in the
same kernel launches (`kernels.paired_runs`, one CUDA GPU; the Potts case with `--potts` too).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from flips_pegasus import pegasus_inputs  # noqa: E402
from timing import best_time  # noqa: E402

N_DATA = 500


def _library(name: str):
    if name == "thrml":
        import thrml.models.ising as ising
        from thrml.block_management import Block
        from thrml.block_sampling import SamplingSchedule
        from thrml.pgm import SpinNode
    else:
        import heatbath.models.ising as ising
        from heatbath.block_management import Block
        from heatbath.block_sampling import SamplingSchedule
        from heatbath.pgm import SpinNode
    return ising, Block, SamplingSchedule, SpinNode


class Example(NamedTuple):
    """THRML's training example built in one library: the model, its nodes and edges, the data
    nodes' block, the free colouring (negative phase), the latent colouring (positive phase) and
    the schedule of both phases."""

    ising: object  # the library's models.ising module
    nodes: list
    edges: list
    model: object
    data_block: object
    free_blocks: list
    latent_blocks: list
    schedule: object


def build_example(lib: str, schedule_args=(5, 100, 5)) -> Example:
    """The same model, data nodes and colourings in library `lib` (new nodes on every call)."""
    ising, Block, SamplingSchedule, SpinNode = _library(lib)
    edge_index, n_nodes, colours, biases, weights = pegasus_inputs()
    nodes = [SpinNode() for _ in range(n_nodes)]
    edges = [(nodes[u], nodes[v]) for u, v in edge_index.tolist()]
    model = ising.IsingEBM(nodes, edges, jnp.asarray(biases), jnp.asarray(weights), jnp.asarray(1.0))
    data_ids = np.random.default_rng(4242).choice(n_nodes, N_DATA, replace=False)
    is_data = np.zeros(n_nodes, bool)
    is_data[data_ids] = True
    colour_range = range(colours.max() + 1)
    free_blocks = [Block([nodes[i] for i in np.flatnonzero(colours == c)]) for c in colour_range]
    latent_blocks = [Block([nodes[i] for i in np.flatnonzero((colours == c) & ~is_data)]) for c in colour_range]
    return Example(ising, nodes, edges, model, Block([nodes[i] for i in data_ids]), free_blocks, latent_blocks,
                   SamplingSchedule(*schedule_args))


TIMED_KEYS = 64  # keys made before the clock starts, one per timed call


def gradient_call(lib: str, batch: int, schedule_args=(5, 100, 5), positive_chains: int = 1):
    """`(call(i) -> (weight_grads, bias_grads, ...), description)` for library `lib`, with
    `positive_chains` clamped chains per data row."""
    ex = build_example(lib, schedule_args)
    spec = ex.ising.IsingTrainingSpec(ex.model, [ex.data_block], [], ex.latent_blocks, ex.free_blocks, ex.schedule,
                                      ex.schedule)
    k_data, k_free, k_clamped = jax.random.split(jax.random.key(7), 3)
    data = jax.random.bernoulli(k_data, 0.5, (batch, N_DATA))
    init_free = ex.ising.hinton_init(k_free, ex.model, ex.free_blocks, (batch,))
    init_clamped = ex.ising.hinton_init(k_clamped, ex.model, ex.latent_blocks, (positive_chains, batch))
    run = jax.jit(lambda k: ex.ising.estimate_kl_grad(k, spec, ex.nodes, ex.edges, [data], [], init_clamped, init_free))
    keys = [jax.random.key(100 + i) for i in range(TIMED_KEYS)]
    chains = batch + positive_chains * batch  # free chains, plus the clamped chains of every data row
    sweeps = schedule_args[0] + schedule_args[1] * schedule_args[2]
    return (lambda i: run(keys[i])), f"{chains} chains x about {sweeps} sweeps"


def train_api_call(batch: int, schedule_args=(5, 100, 5), factorized: bool = False):
    """The same gradient through heatbath's own training API (`heatbath.train.estimate_kl_grad`,
    which serves any factorised EBM; for an `IsingEBM` it sums ∂E/∂θ from the samples' moments)."""
    import equinox as eqx

    import heatbath.train as ht

    ex = build_example("heatbath", schedule_args)
    model = ex.model
    if factorized:  # the same energy as a FactorizedEBM of two SpinEBMFactors (fields, couplings)
        from heatbath.models import FactorizedEBM

        model = FactorizedEBM(list(model.factors))
    spec = ht.TrainingSpec(model, [ex.data_block], [], ex.latent_blocks, ex.free_blocks, ex.schedule, ex.schedule)
    data = [jax.random.bernoulli(jax.random.key(7), 0.5, (batch, N_DATA))]
    init_pos = spec.random_positive_state(jax.random.key(8), 1, batch)
    init_neg = spec.random_negative_state(jax.random.key(9), batch)
    run = eqx.filter_jit(lambda k, m: ht.estimate_kl_grad(k, spec, data, [], init_pos, init_neg))
    keys = [jax.random.key(100 + i) for i in range(TIMED_KEYS)]
    return lambda i: run(keys[i], model)


def potts_train_call(batch: int, side: int = 32, k: int = 5, schedule_args=(5, 100, 5), rows: bool = False):
    """`heatbath.train.estimate_kl_grad` on a q-state Potts model (`CategoricalEBM`, couplings
    N(0, 0.3²) on every K×K entry, biases N(0, 1)) on a side × side torus, every other node a data
    node (`rows`: every other row, so the latent nodes couple to each other along their rows), the
    same schedule and chain counts as THRML's Ising example. THRML has no training API for
    categorical models, so this is heatbath alone."""
    import equinox as eqx

    import heatbath.train as ht
    from heatbath import Block, CategoricalNode, SamplingSchedule
    from heatbath.graphs import color_blocks
    from heatbath.models import CategoricalEBM

    rng = np.random.default_rng(0)
    nodes = [CategoricalNode() for _ in range(side * side)]
    at = lambda i, j: nodes[(i % side) * side + j % side]  # noqa: E731
    edges = [(at(i, j), at(i, j + 1)) for i in range(side) for j in range(side)]
    edges += [(at(i, j), at(i + 1, j)) for i in range(side) for j in range(side)]
    model = CategoricalEBM(nodes, rng.normal(0, 1, (len(nodes), k)).astype(np.float32), edges,
                           rng.normal(0, 0.3, (len(edges), k, k)).astype(np.float32))
    parity = (lambda i: i // side % 2) if rows else (lambda i: (i + i // side) % 2)  # noqa: E731
    visible = [n for i, n in enumerate(nodes) if parity(i) == 0]
    latent = [n for i, n in enumerate(nodes) if parity(i) == 1]
    schedule = SamplingSchedule(*schedule_args)
    spec = ht.TrainingSpec(model, [Block(visible)], [], color_blocks(model, nodes=latent), color_blocks(model),
                           schedule, schedule)
    data = [jnp.asarray(rng.integers(0, k, (batch, len(visible))), jnp.uint8)]
    init_pos = spec.random_positive_state(jax.random.key(8), 1, batch)
    init_neg = spec.random_negative_state(jax.random.key(9), batch)
    run = eqx.filter_jit(lambda key, m: ht.estimate_kl_grad(key, spec, data, [], init_pos, init_neg))
    keys = [jax.random.key(100 + i) for i in range(TIMED_KEYS)]
    return lambda i: run(keys[i], model)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--positive-chains", type=int, default=1, help="clamped chains per data row (THRML's example: 1)")
    parser.add_argument("--no-thrml", action="store_true")
    parser.add_argument("--train-api", action="store_true", help="also time heatbath.train.estimate_kl_grad")
    parser.add_argument("--factorized", action="store_true",
                        help="also time heatbath.train.estimate_kl_grad with the model as a FactorizedEBM")
    parser.add_argument("--potts", action="store_true",
                        help="also time heatbath.train.estimate_kl_grad on a q = 5 Potts model, 32 x 32 torus")
    parser.add_argument("--potts-rows", action="store_true",
                        help="also time the Potts case with every other row a data row (latent nodes coupled)")
    parser.add_argument("--unpaired", action="store_true",
                        help="also time heatbath's calls with the phases one after the other (no paired launches)")
    args = parser.parse_args(argv)
    ours_call, what = gradient_call("heatbath", args.batch, positive_chains=args.positive_chains)
    print(f"device {jax.devices()[0].device_kind}; P(14), batch {args.batch}, {args.positive_chains} clamped chains a row: "
          f"{what}; best of {args.repeats} (ms)")
    ours, ours_out = best_time(ours_call, args.repeats)
    line = f"heatbath {1e3 * ours:10.1f}"
    if not args.no_thrml:
        theirs_call, _ = gradient_call("thrml", args.batch, positive_chains=args.positive_chains)
        theirs, theirs_out = best_time(theirs_call, args.repeats)
        line += f"   THRML {1e3 * theirs:10.1f}   ratio {theirs / ours:6.1f}x"
        # a sanity line, not a test: both estimate the same gradient (different random numbers)
        diff = np.abs(np.asarray(ours_out[1]) - np.asarray(theirs_out[1]))
        line += f"   mean |bias grad difference| {diff.mean():.3f}"
    print(line, flush=True)
    _time_train_api(args, "")
    if args.unpaired:
        _time_unpaired(args)


def _time_train_api(args, prefix: str) -> None:
    """`heatbath.train.estimate_kl_grad` on each case the flags ask for, one line each."""
    cases = [(args.train_api, "", lambda: train_api_call(args.batch)),
             (args.factorized, ", the model as a FactorizedEBM", lambda: train_api_call(args.batch, factorized=True)),
             (args.potts, ", q = 5 Potts, 32 x 32 torus, 512 data nodes", lambda: potts_train_call(args.batch)),
             (args.potts_rows, ", q = 5 Potts, data rows", lambda: potts_train_call(args.batch, rows=True))]
    for wanted, what, call in cases:
        if wanted:
            seconds, _ = best_time(call(), args.repeats)
            print(f"{prefix}heatbath.train.estimate_kl_grad{what} {1e3 * seconds:10.1f}", flush=True)


def _time_unpaired(args) -> None:
    """heatbath's calls again with `kernels.paired_runs` declining every pair: the phases one after
    the other, as on machines where they cannot pair (the same samples)."""
    import heatbath.kernels.paired_runs as paired_runs

    paired_runs.fold_paired_runs = lambda *a, **k: None
    jax.clear_caches()
    ours, _ = best_time(gradient_call("heatbath", args.batch)[0], args.repeats)
    print(f"unpaired: heatbath {1e3 * ours:10.1f}", flush=True)
    _time_train_api(args, "unpaired: ")


if __name__ == "__main__":
    main()
