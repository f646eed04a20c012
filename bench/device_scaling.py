"""Multi-device scaling of the pairwise kernel: Ising on Pegasus P(14), chains split over 1..N devices.

The same model and schedule as `bench/flips_pegasus.py`, run through `sample_states_batched` with
`devices=jax.devices()[:n]` for n = 1, 2, 4, ... up to every visible device. Chains are split
evenly (`shard_map` over a one-axis mesh) and each chain's samples do not depend on n, so the
throughput ratio is the whole story. Flips/ns from the best of `--repeats` timed calls after a
compiling one.

    python3 bench/device_scaling.py [--chains 64000 256000] [--sweeps 100] [--repeats 3]
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


def main(argv=None) -> None:
    from flips_pegasus import build

    from heatbath.graphs import color_graph, pegasus_edge_index
    from heatbath.kernels.batched import sample_states_batched

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, nargs="+", default=[64000, 256000])
    parser.add_argument("--sweeps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    n_nodes, edge_index = pegasus_edge_index(14)
    colours = color_graph(n_nodes, edge_index)
    rng = np.random.default_rng(0)
    inputs = (edge_index, n_nodes, colours, rng.normal(0, 1, n_nodes).astype(np.float32),
              rng.normal(0, 0.3, len(edge_index)).astype(np.float32))
    program, init, nodes, Block, SamplingSchedule, _ = build("heatbath", *inputs)
    schedule = SamplingSchedule(args.sweeps, 1, 1)
    observed = [Block(nodes)]
    devices = jax.devices()
    counts = [n for n in (1, 2, 4, 8, 16) if n <= len(devices)]
    print(f"Pegasus P(14), {args.sweeps} sweeps; {len(devices)} x {devices[0].device_kind}; jax {jax.__version__}")
    print(f"{'chains':>8} " + " ".join(f"{n:>2} dev flips/ns" for n in counts) + "  speed-up over 1 device")
    for chains in args.chains:
        states = [jnp.zeros((chains,) + x.shape, x.dtype) for x in init]
        rates = []
        for n in counts:
            run = lambda k: sample_states_batched(k, program, schedule, states, [], observed, devices=devices[:n])  # noqa: E731
            jax.block_until_ready(run(jax.random.key(0)))
            best = float("inf")
            for i in range(args.repeats):
                start = time.perf_counter()
                jax.block_until_ready(run(jax.random.key(1 + i)))
                best = min(best, time.perf_counter() - start)
            rates.append(args.sweeps * len(nodes) * chains / best / 1e9)
        print(f"{chains:>8} " + " ".join(f"{r:>15.4g}" for r in rates) + "  " + " ".join(f"{r / rates[0]:.3g}x" for r in rates), flush=True)


if __name__ == "__main__":
    main()
