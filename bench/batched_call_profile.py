"""Where a `sample_states_batched` call's host time goes: cProfile of repeated calls, beside the
THRML-style call's time, on the periodic L × L Ising lattice of `flips_lattice.py` (the lattice route
on CUDA GPUs, the pairwise kernels elsewhere).

    PYTHONPATH=src python3 bench/batched_call_profile.py [--L 256] [--chains 64] [--sweeps 100] [--calls 50]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys

import jax

sys.path.insert(0, os.path.dirname(__file__))
from flips_lattice import _block_init, _init_spins, build, lattice_inputs  # noqa: E402
from timing import batched_time, thrml_style_time  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--L", type=int, default=256)
    parser.add_argument("--chains", type=int, default=64)
    parser.add_argument("--sweeps", type=int, default=100)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    from heatbath.kernels.batched import sample_states_batched

    inputs = lattice_inputs(args.L)
    built = build("heatbath", *inputs)
    program, nodes, members, Block, SamplingSchedule, _ = built
    states = _block_init(_init_spins(args.L, args.chains), members)
    thrml_style, _ = thrml_style_time(built, states, args.chains, args.sweeps, 10)
    batched, _ = batched_time(built, states, args.sweeps, 10)
    print(f"L={args.L}, {args.chains} chains, {args.sweeps} sweeps on {jax.devices()[0].device_kind}: "
          f"THRML-style {1e3 * thrml_style:.3f} ms, batched {1e3 * batched:.3f} ms a call (best of 10)")
    schedule, observed = SamplingSchedule(args.sweeps, 1, 1), [Block(nodes)]
    keys = [jax.random.key(i) for i in range(args.calls)]
    _time_route_pieces(program, schedule, states, observed, keys)
    profile = cProfile.Profile()
    profile.enable()
    for key in keys:
        jax.block_until_ready(sample_states_batched(key, program, schedule, states, [], observed))
    profile.disable()
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats(order).print_stats(args.top)
        print(f"--- {args.calls} calls, by {order}\n" + "\n".join(out.getvalue().splitlines()[6:]))


def _time_route_pieces(program, schedule, states, observed, keys) -> None:
    """The lattice route's compiled call alone, with J and h as numpy scalars (what the batched call
    passes) and as device arrays, against the whole call (median milliseconds)."""
    import statistics
    import time

    import jax.numpy as jnp
    import numpy as np

    from heatbath.kernels import batched
    from heatbath.kernels.pairwise_tables import pairwise_tables

    tables = pairwise_tables(program)
    ids = [batched._observed_ids(program.gibbs_spec, block) for block in observed]
    route = batched._torus_route(program, tables, ids, states[0].shape[0], None)
    if route is None:
        print("no lattice route here")
        return
    torus, index, backend, split = route
    block_states = batched.chain_block_states(program, list(states), [], states[0].shape[0])
    options = dict(L=torus.L, q=None, schedule=schedule, backend=backend, devices=split)
    J, h = np.asarray(torus.J, np.float32), np.asarray(torus.h, np.float32)
    J_dev, h_dev = jnp.asarray(J), jnp.asarray(h)
    calls = {
        "whole batched call": lambda k: batched.sample_states_batched(k, program, schedule, states, [], observed),
        "route call, numpy J, h": lambda k: batched._run_torus(k, block_states, index, J, h, **options),
        "route call, device J, h": lambda k: batched._run_torus(k, block_states, index, J_dev, h_dev, **options),
        "dispatch only (no wait), device J, h": None,
    }
    for name, call in calls.items():
        times = []
        for key in keys:
            start = time.perf_counter()
            if call is None:
                out = batched._run_torus(key, block_states, index, J_dev, h_dev, **options)
                times.append(time.perf_counter() - start)
                jax.block_until_ready(out)
            else:
                jax.block_until_ready(call(key))
                times.append(time.perf_counter() - start)
        print(f"{name:>40}: {1e3 * statistics.median(times):.3f} ms (median of {len(keys)})")


if __name__ == "__main__":
    main()
