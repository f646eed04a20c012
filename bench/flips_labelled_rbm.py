"""Sampling throughput of a labelled RBM (spin pixels and a categorical label, both visible, and
hidden spins), heatbath vs THRML, in one process.

The model of `examples/digits_rbm.py` at any size: `--visible` spin pixels and one 10-state label
node on the visible side, `--hidden` spins on the other, every pixel–hidden coupling
(`SpinEBMFactor` pairs, N(0, 0.05²)), every label–hidden coupling (one `DiscreteEBMFactor`,
N(0, 0.3²) per label state), biases N(0, 0.5²) (the label's per state). Two sampling groups, as in
the example: (pixels, label) and hidden. Seed 0, the same inputs and initial state in every column.
The pixels and the label read the whole hidden layer, and the hidden units the whole pixel layer: a
program mixing spins with categories whose nodes read dense layers. Columns:

- THRML: `jax.jit(jax.vmap(lambda k, s: sample_states(k, program, schedule, s, [], blocks)))`.
- heatbath vmap: the same call with heatbath's classes (the categorical kernels' update, dense
  layers through matrix products: `pairwise_sweep._dense_logits`).
- heatbath generic (`--generic`): the same call with heatbath's fast paths off, the route such
  programs took before (nodes of more than 32 neighbours kept them off the categorical update).
- heatbath batched: `heatbath.kernels.batched.sample_states_batched`.

Flips/ns = sweeps × (visible + 1 + hidden) × chains / seconds, best of `--repeats` after a compiling
call; a sanity line prints the fraction of hidden units up and the mean label per column.

    .venv-bench/bin/python bench/flips_labelled_rbm.py [--visible 64] [--hidden 100] [--chains 1000] [--sweeps 20]
        [--repeats 3] [--no-thrml] [--generic] [--first-call]

`--first-call` also prints each library's first THRML-style call with a freshly built program, in
seconds: compiling included, which is what a script that samples once pays.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from flips_mixed import _library  # noqa: E402
from timing import best_time, print_rates, with_patches  # noqa: E402

LABELS = 10


def build(lib: str, n_v: int, n_h: int):
    (Block, BlockGibbsSpec, SamplingSchedule, sample_states, FactorSamplingProgram, CategoricalEBMFactor,
     CategoricalGibbsConditional, DiscreteEBMFactor, SpinEBMFactor, SpinGibbsConditional, CategoricalNode,
     SpinNode) = _library(lib)
    rng = np.random.default_rng(0)
    pixels, hidden, label = [SpinNode() for _ in range(n_v)], [SpinNode() for _ in range(n_h)], CategoricalNode()
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    factors = [
        SpinEBMFactor([Block(pixels)], f32(rng.normal(0, 0.5, n_v))),
        SpinEBMFactor([Block(hidden)], f32(rng.normal(0, 0.5, n_h))),
        CategoricalEBMFactor([Block([label])], f32(rng.normal(0, 0.5, (1, LABELS)))),
        SpinEBMFactor([Block([p for p in pixels for _ in hidden]), Block([h for _ in pixels for h in hidden])],
                      f32(rng.normal(0, 0.05, n_v * n_h))),
        DiscreteEBMFactor([Block(hidden)], [Block([label] * n_h)], f32(rng.normal(0, 0.3, (n_h, LABELS)))),
    ]
    blocks = [Block(pixels), Block([label]), Block(hidden)]
    spec = BlockGibbsSpec([(blocks[0], blocks[1]), blocks[2]], [])
    samplers = [SpinGibbsConditional(), CategoricalGibbsConditional(LABELS), SpinGibbsConditional()]
    program = FactorSamplingProgram(spec, samplers, factors, [])
    return program, blocks, SamplingSchedule, sample_states


def initial_states(n_v: int, n_h: int, chains: int) -> list:
    keys = jax.random.split(jax.random.key(0), 3)
    return [jax.random.bernoulli(keys[0], 0.5, (chains, n_v)),
            jax.random.randint(keys[1], (chains, 1), 0, LABELS).astype(jnp.uint8),
            jax.random.bernoulli(keys[2], 0.5, (chains, n_h))]


def thrml_style(lib: str, n_v: int, n_h: int, init, chains: int, sweeps: int, repeats: int):
    run, keys = _thrml_style_call(lib, n_v, n_h, chains, sweeps)
    return best_time(lambda i: run(keys, init), repeats)


def _thrml_style_call(lib: str, n_v: int, n_h: int, chains: int, sweeps: int):
    program, blocks, SamplingSchedule, sample_states = build(lib, n_v, n_h)
    schedule = SamplingSchedule(sweeps, 1, 1)
    run = jax.jit(jax.vmap(lambda k, s: sample_states(k, program, schedule, s, [], blocks[1:])))
    return run, jax.random.split(jax.random.key(1), chains)


def first_call_seconds(lib: str, n_v: int, n_h: int, init, chains: int, sweeps: int) -> float:
    """Seconds of the first THRML-style call of a freshly built program: compiling included."""
    run, keys = _thrml_style_call(lib, n_v, n_h, chains, sweeps)
    start = time.perf_counter()
    jax.block_until_ready(run(keys, init))
    return time.perf_counter() - start


def batched(n_v: int, n_h: int, init, chains: int, sweeps: int, repeats: int):
    from heatbath.kernels.batched import sample_states_batched

    program, blocks, SamplingSchedule, _ = build("heatbath", n_v, n_h)
    schedule = SamplingSchedule(sweeps, 1, 1)
    keys = [jax.random.key(1 + i) for i in range(repeats + 1)]
    return best_time(lambda i: sample_states_batched(keys[i], program, schedule, init, [], blocks[1:]), repeats)


def generic(n_v: int, n_h: int, init, chains: int, sweeps: int, repeats: int):
    """The THRML-style call with heatbath's fast paths off (the generic sweep loop)."""
    from heatbath.kernels import pairwise_tables

    off = lambda program: (None, "fast paths off for this benchmark")  # noqa: E731
    return with_patches([(pairwise_tables, "_pairwise_kind", off)], thrml_style, "heatbath", n_v, n_h, init, chains,
                        sweeps, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--visible", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=100)
    parser.add_argument("--chains", type=int, nargs="+", default=[1000])
    parser.add_argument("--sweeps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-thrml", action="store_true")
    parser.add_argument("--generic", action="store_true", help="also time heatbath with its fast paths off")
    parser.add_argument("--first-call", action="store_true",
                        help="also print each library's first THRML-style call (compiling included), in seconds")
    args = parser.parse_args()
    n_v, n_h = args.visible, args.hidden
    print(f"labelled RBM {n_v} pixels + {LABELS}-state label x {n_h} hidden; device {jax.devices()[0].device_kind}; "
          f"{args.sweeps} sweeps; flips/ns (best of {args.repeats})", flush=True)
    for chains in args.chains:
        init = initial_states(n_v, n_h, chains)
        flips = args.sweeps * (n_v + 1 + n_h) * chains
        if args.first_call:
            libraries = ["heatbath"] + ([] if args.no_thrml else ["thrml"])
            firsts = {lib: first_call_seconds(lib, n_v, n_h, init, chains, args.sweeps) for lib in libraries}
            print(f"chains={chains}   first call (s): " + "   ".join(f"{k} {v:.2f}" for k, v in firsts.items()), flush=True)
        columns = {}
        if not args.no_thrml:
            columns["THRML"] = thrml_style("thrml", n_v, n_h, init, chains, args.sweeps, args.repeats)
        columns["heatbath vmap"] = thrml_style("heatbath", n_v, n_h, init, chains, args.sweeps, args.repeats)
        if args.generic:
            columns["heatbath generic"] = generic(n_v, n_h, init, chains, args.sweeps, args.repeats)
        columns["heatbath batched"] = batched(n_v, n_h, init, chains, args.sweeps, args.repeats)
        print_rates(f"chains={chains}", columns, flips)
        sanity = "; ".join(f"{name} {float(jnp.mean(out[1][:, -1].astype(jnp.float32))):.3f} / "
                           f"{float(jnp.mean(out[0][:, -1].astype(jnp.float32))):.3f}" for name, (_, out) in columns.items())
        print(f"   hidden up / mean label: {sanity}", flush=True)


if __name__ == "__main__":
    main()
