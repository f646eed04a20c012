"""Multi-device scaling: the pairwise kernel (Pegasus P(14)) or the lattice kernel, chains split over 1..N devices.

The same model and schedule as `bench/flips_pegasus.py`, run through `sample_states_batched` with
`devices=jax.devices()[:n]` for n = 1, 2, 4, ... up to every visible device. Chains are split
evenly (`shard_map` over a one-axis mesh) and each chain's samples do not depend on n, so the
throughput ratio is the whole story. Flips/ns from the best of `--repeats` timed calls after a
compiling one.

    python3 bench/device_scaling.py [--chains 64000 256000] [--sweeps 100] [--repeats 3] [--method auto]
    python3 bench/device_scaling.py --lattice 4096 --chains 8 --sweeps 1000

`--lattice L` times `run_lattice` (the multispin kernel) on `chains` L × L lattices at β_c instead,
with `devices=jax.devices()[:n]`.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax

sys.path.insert(0, os.path.dirname(__file__))


def main(argv=None) -> None:
    from flips_pegasus import batched_flips_per_ns, pegasus_inputs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, nargs="+", default=[64000, 256000])
    parser.add_argument("--sweeps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lattice", type=int, default=0, help="time run_lattice on L x L lattices instead")
    parser.add_argument("--method", default="auto", help="the pairwise update (sample_states_batched's method)")
    args = parser.parse_args(argv)

    devices = jax.devices()
    counts = [n for n in (1, 2, 4, 8, 16) if n <= len(devices)]
    if args.lattice:
        return lattice_scaling(args, devices, counts)
    inputs = pegasus_inputs()
    print(f"Pegasus P(14), {args.sweeps} sweeps; {len(devices)} x {devices[0].device_kind}; jax {jax.__version__}")
    print(f"{'chains':>8} " + " ".join(f"{n:>2} dev flips/ns" for n in counts) + "  speed-up over 1 device")
    for chains in args.chains:
        runs = [batched_flips_per_ns(inputs, chains, args.sweeps, args.repeats, devices=devices[:n], method=args.method,
                                     samples=True) for n in counts]
        rates = [rate for rate, _ in runs]
        same = all(bool((out[0] == runs[0][1][0]).all()) for _, out in runs[1:])
        print(f"{chains:>8} " + " ".join(f"{r:>15.4g}" for r in rates) + "  " + " ".join(f"{r / rates[0]:.3g}x" for r in rates)
              + f"  (same samples on every device count: {same})", flush=True)


def lattice_scaling(args, devices, counts) -> None:
    from flips_lattice import BETA_C, _init_spins
    from timing import best_time

    from heatbath.kernels import run_lattice

    L = args.lattice
    print(f"2D Ising L={L} at beta_c, {args.sweeps} sweeps; {len(devices)} x {devices[0].device_kind}; jax {jax.__version__}")
    print(f"{'chains':>8} " + " ".join(f"{n:>2} dev flips/ns" for n in counts) + "  speed-up over 1 device")
    for chains in args.chains:
        state, rates = _init_spins(L, chains), []
        for n in counts:
            run = lambda i: run_lattice(jax.random.key(i), state, BETA_C, args.sweeps,  # noqa: E731, B023
                                        measure_every=args.sweeps, devices=devices[:n])  # fmt: skip
            seconds, _ = best_time(run, args.repeats)
            rates.append(args.sweeps * L * L * chains / seconds / 1e9)
        print(f"{chains:>8} " + " ".join(f"{r:>15.4g}" for r in rates) + "  " + " ".join(f"{r / rates[0]:.3g}x" for r in rates), flush=True)


if __name__ == "__main__":
    main()
