"""Cost of one eager `sample_states` call (one chain, no jit around it), heatbath vs THRML.

THRML's documentation calls `sample_states` eagerly for one chain; a notebook or a script that loops
over such calls pays their per-call cost, not the sweeps. The same P(14) Ising model as
`flips_pegasus.py` and periodic L × L lattices (`--L`, default 16) with couplings 0.4 (β = 1, no field), each
`--sweeps` warm-up sweeps and one sample of every node, in both libraries in one process. Milliseconds per call: the median of `--repeats` calls after one compiling call,
each with a new key.

    .venv-bench/bin/python bench/eager_call.py [--sweeps 10] [--repeats 20] [--no-thrml] [--L 16 64] [--rebuild]

With `--rebuild` every timed call first builds the model and program again from the same nodes with
new couplings, as a training loop that builds its model where it samples does.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from flips_pegasus import build, pegasus_inputs  # noqa: E402
from timing import median_ms  # noqa: E402

from heatbath.graphs import lattice_2d  # noqa: E402


def lattice_inputs(L: int = 16, beta: float = 0.4):
    lattice = lattice_2d(L, periodic=True)
    edges = np.asarray(lattice.edge_index)
    return (edges, L * L, np.asarray(lattice.colors()), np.zeros(L * L, np.float32),
            np.full(len(edges), beta, np.float32))


def eager_ms(lib: str, inputs, sweeps: int, repeats: int) -> float:
    program, init, nodes, Block, SamplingSchedule, sample_states = build(lib, *inputs)
    schedule, every = SamplingSchedule(sweeps, 1, 1), [Block(nodes)]
    return median_ms(lambda i: sample_states(jax.random.key(i), program, schedule, init, [], every), repeats)


def rebuilt_ms(lib: str, inputs, sweeps: int, repeats: int) -> float:
    """As `eager_ms`, but each call first builds the model and program again from the same nodes with
    new couplings, as a loop that builds its model where it samples does (the Benford experiment)."""
    edge_index, n_nodes, colours, biases, weights = inputs
    nodes = build(lib, *inputs)[2]

    def call(i: int):
        program, init, _, Block, SamplingSchedule, sample_states = build(
            lib, edge_index, n_nodes, colours, biases, weights * (1 + 0.01 * i), nodes=nodes)
        return sample_states(jax.random.key(i), program, SamplingSchedule(sweeps, 1, 1), init, [], [Block(nodes)])

    return median_ms(call, repeats)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-thrml", action="store_true")
    parser.add_argument("--L", type=int, nargs="+", default=[16],
                        help="periodic lattice sizes (on GPUs L a multiple of 64 takes the lattice kernel's route)")
    parser.add_argument("--rebuild", action="store_true",
                        help="build the model and program again before every call (same nodes, new couplings)")
    args = parser.parse_args(argv)
    timed = rebuilt_ms if args.rebuild else eager_ms
    what = "model, program and call" if args.rebuild else "call"
    print(f"device {jax.devices()[0].device_kind}; {args.sweeps} sweeps, one chain, median of {args.repeats} "
          f"calls (ms per {what})")
    cases = [(f"Ising {L}x{L} torus", lattice_inputs(L)) for L in args.L] + [("Ising on P(14)", pegasus_inputs())]
    for name, inputs in cases:
        ours = timed("heatbath", inputs, args.sweeps, args.repeats)
        line = f"{name:>18}: heatbath {ours:8.2f}"
        if not args.no_thrml:
            theirs = timed("thrml", inputs, args.sweeps, max(3, args.repeats // 5))
            line += f"   THRML {theirs:9.2f}   ratio {theirs / ours:6.1f}x"
        print(line, flush=True)


if __name__ == "__main__":
    main()
