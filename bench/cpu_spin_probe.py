"""Probe: the compiled CPU spin kernel (`kernels.cpu_spin`) alone on Pegasus P(14), by thread count.

Calls `run_spin_on_cpu` under `jax.jit` (its host side and the numba schedule, nothing else) on
the benchmark model of `flips_pegasus.py`, `--sweeps` warm-up sweeps and one sample, and prints the
best of `--repeats` calls in flips/ns for each entry of `--threads`, the thread counts alternating
in one process so that the VM's drift falls on all of them alike. The kernel's thread count is set
on the one thread that makes every kernel call (numba's thread count belongs to the calling thread).

    JAX_PLATFORMS=cpu python bench/cpu_spin_probe.py [--chains 64] [--sweeps 100] [--threads 1 2 1 2]
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numba
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from flips_pegasus import build, pegasus_inputs  # noqa: E402
from timing import best_time  # noqa: E402

from heatbath import SamplingSchedule  # noqa: E402
from heatbath.kernels import cpu_spin  # noqa: E402
from heatbath.kernels.pairwise_sweep import all_sweep_params  # noqa: E402
from heatbath.kernels.pairwise_tables import pairwise_tables  # noqa: E402


def kernel_call(chains: int, sweeps: int):
    """A no-argument call of the CPU kernel on P(14) with `chains` chains, and the flips it makes."""
    program, init, nodes, *_ = build("heatbath", *pegasus_inputs())
    tables = pairwise_tables(program)
    fields = all_sweep_params(program, tables)
    order = tuple(tuple(members) for members in program.gibbs_spec.sampling_order)
    words = jax.random.bits(jax.random.key(0), (chains, 2), jnp.uint32)
    states = [jax.random.bernoulli(jax.random.key(1 + b), 0.5, (chains, len(x))) for b, x in enumerate(init)]
    observed = [np.arange(len(init[0]))]
    schedule = SamplingSchedule(sweeps, 1, 1)

    # Compiled, so that the host work around the kernel is XLA's (the pattern tables of constant weights
    # are folded at compile time), as in a THRML-style call; eager jax.numpy would time op dispatch.
    call = jax.jit(lambda: cpu_spin.run_spin_on_cpu(tables, order, schedule, [f[0] for f in fields],
                                                    [f[1] for f in fields], words, states, observed))
    return lambda _: call(), sweeps * len(nodes) * chains


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=64)
    parser.add_argument("--sweeps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 1, 2])
    args = parser.parse_args()
    call, flips = kernel_call(args.chains, args.sweeps)
    print(f"P(14), {args.chains} chains, {args.sweeps} sweeps, CPU kernel alone (flips/ns, best of {args.repeats})")
    for threads in args.threads:
        cpu_spin._KERNEL_THREAD.call(numba.set_num_threads, threads)
        seconds, _ = best_time(call, args.repeats)
        print(f"  threads {threads}: {flips / seconds / 1e9:.3f}", flush=True)


if __name__ == "__main__":
    main()
