"""Sampling throughput of a categorical RBM (q-state visible and hidden nodes, every pair coupled),
heatbath vs THRML, in one process.

`--visible` and `--hidden` nodes of `--states` categories each, two sampling blocks (visible,
hidden), biases N(0, 0.5²) per state and a general q × q coupling table N(0, 0.1²) for every
coupled visible–hidden pair (one `CategoricalEBMFactor`). Seed 0; the same inputs and initial states
in every column. By default every pair is coupled, so every node reads the whole other layer, which
heatbath reads through matrix products (`pairwise_sweep._dense_logits`, the indicators of the
source's categories stacked along the product's depth). `--degree D` couples each visible node to D
hidden nodes drawn at random instead: tables narrower than half the other layer are gathered
(`pairwise_sweep._add_gathered`). Columns:

- THRML: `jax.jit(jax.vmap(lambda k, s: sample_states(k, program, schedule, s, [], blocks)))`.
- heatbath vmap: the same call with heatbath's classes.
- heatbath batched: `heatbath.kernels.batched.sample_states_batched`.

Flips/ns = sweeps × (visible + hidden) × chains / seconds, best of `--repeats` after a compiling
call, whose time (the first call of a freshly built program, compiling included) is printed too.

    .venv-bench/bin/python bench/flips_categorical_rbm.py [--visible 64] [--hidden 32] [--states 4]
        [--degree D] [--chains 1000] [--sweeps 20] [--repeats 3] [--no-thrml]
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
from timing import best_time, print_rates  # noqa: E402


def build(lib: str, n_v: int, n_h: int, q: int, degree: int | None = None):
    (Block, BlockGibbsSpec, SamplingSchedule, sample_states, FactorSamplingProgram, CategoricalEBMFactor,
     CategoricalGibbsConditional, *_, CategoricalNode, _) = _library(lib)
    rng = np.random.default_rng(0)
    visible, hidden = [CategoricalNode() for _ in range(n_v)], [CategoricalNode() for _ in range(n_h)]
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    pairs = [(i, j) for i in range(n_v) for j in (range(n_h) if degree is None else rng.choice(n_h, degree, replace=False))]
    factors = [
        CategoricalEBMFactor([Block(visible)], f32(rng.normal(0, 0.5, (n_v, q)))),
        CategoricalEBMFactor([Block(hidden)], f32(rng.normal(0, 0.5, (n_h, q)))),
        CategoricalEBMFactor([Block([visible[i] for i, _ in pairs]), Block([hidden[j] for _, j in pairs])],
                             f32(rng.normal(0, 0.1, (len(pairs), q, q)))),
    ]
    blocks = [Block(visible), Block(hidden)]
    samplers = [CategoricalGibbsConditional(q), CategoricalGibbsConditional(q)]
    program = FactorSamplingProgram(BlockGibbsSpec(blocks, []), samplers, factors, [])
    return program, blocks, SamplingSchedule, sample_states


def thrml_style(lib: str, args, init, chains: int) -> tuple[float, tuple]:
    """(seconds of the first call, (best seconds, samples)) of the THRML-style call."""
    program, blocks, SamplingSchedule, sample_states = build(lib, args.visible, args.hidden, args.states, args.degree)
    schedule = SamplingSchedule(args.sweeps, 1, 1)
    run = jax.jit(jax.vmap(lambda k, s: sample_states(k, program, schedule, s, [], blocks)))
    keys = jax.random.split(jax.random.key(1), chains)
    start = time.perf_counter()
    jax.block_until_ready(run(keys, init))
    first = time.perf_counter() - start
    return first, best_time(lambda i: run(keys, init), args.repeats)


def batched(args, init) -> tuple[float, tuple]:
    from heatbath.kernels.batched import sample_states_batched

    program, blocks, SamplingSchedule, _ = build("heatbath", args.visible, args.hidden, args.states, args.degree)
    schedule = SamplingSchedule(args.sweeps, 1, 1)
    keys = [jax.random.key(1 + i) for i in range(args.repeats + 2)]  # made before any timing
    run = lambda i: sample_states_batched(keys[i], program, schedule, init, [], blocks)  # noqa: E731
    start = time.perf_counter()
    jax.block_until_ready(run(args.repeats + 1))
    first = time.perf_counter() - start
    return first, best_time(run, args.repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--visible", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--states", type=int, default=4)
    parser.add_argument("--degree", type=int, default=None, help="hidden nodes per visible node (default: all)")
    parser.add_argument("--chains", type=int, nargs="+", default=[1000])
    parser.add_argument("--sweeps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-thrml", action="store_true")
    args = parser.parse_args()
    coupled = "every pair" if args.degree is None else f"{args.degree} hidden per visible node"
    print(f"categorical RBM {args.visible} x {args.hidden}, {args.states} states, {coupled}; device "
          f"{jax.devices()[0].device_kind}; {args.sweeps} sweeps; flips/ns (best of {args.repeats})", flush=True)
    for chains in args.chains:
        keys = jax.random.split(jax.random.key(0), 2)
        init = [jax.random.randint(k, (chains, n), 0, args.states).astype(jnp.uint8)
                for k, n in zip(keys, (args.visible, args.hidden))]
        firsts, columns = {}, {}
        if not args.no_thrml:
            firsts["THRML"], columns["THRML"] = thrml_style("thrml", args, init, chains)
        firsts["heatbath vmap"], columns["heatbath vmap"] = thrml_style("heatbath", args, init, chains)
        firsts["heatbath batched"], columns["heatbath batched"] = batched(args, init)
        print_rates(f"chains={chains}", columns, args.sweeps * (args.visible + args.hidden) * chains)
        print("   first call (s): " + "   ".join(f"{k} {v:.2f}" for k, v in firsts.items()), flush=True)
        means = "; ".join(f"{k} {float(jnp.mean(out[0][:, -1].astype(jnp.float32))):.3f}" for k, (_, out) in columns.items())
        print(f"   mean visible category: {means}", flush=True)


if __name__ == "__main__":
    main()
