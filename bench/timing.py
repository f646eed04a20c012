"""Timing shared by the benchmark scripts: one compiling call, then the best of several timed calls."""

from __future__ import annotations

import statistics
import time

import jax


def best_time(call, repeats: int):
    """Run `call(0)` once to compile, then the best of `repeats` timed `call(i + 1)`: (seconds, first output).

    The index lets a call vary its key, so no timed call can be served from a cache of the first."""
    out = jax.block_until_ready(call(0))
    best = float("inf")
    for i in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(call(i + 1))
        best = min(best, time.perf_counter() - start)
    return best, out


def median_ms(call, repeats: int) -> float:
    """Milliseconds of the median of `repeats` timed `call(i + 1)` after one `call(0)`: per-call cost
    of eager calls, whose host time varies more than a compiled loop's (so the median, not the best)."""
    jax.block_until_ready(call(0))
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(call(i + 1))
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def thrml_style_time(built, states, chains: int, sweeps: int, repeats: int):
    """`jax.jit(jax.vmap(sample_states))` over `chains` keys and per-chain block states: (seconds, samples).

    `built` is a script's `(program, nodes, members, Block, SamplingSchedule, sample_states)`."""
    program, nodes, _, Block, SamplingSchedule, sample_states = built
    schedule = SamplingSchedule(sweeps, 1, 1)
    run = jax.jit(jax.vmap(lambda k, s: sample_states(k, program, schedule, s, [], [Block(nodes)])))
    keys = jax.random.split(jax.random.key(1), chains)
    return best_time(lambda i: run(keys, states), repeats)


def batched_time(built, states, sweeps: int, repeats: int, **options):
    """The same program through heatbath's `sample_states_batched`: (seconds, samples)."""
    from heatbath.kernels.batched import sample_states_batched

    program, nodes, _, Block, SamplingSchedule, _ = built
    schedule = SamplingSchedule(sweeps, 1, 1)
    observed = [Block(nodes)]  # built once, as a sampling loop would
    # Keys made before the clock starts, as the THRML-style timing's keys are (an eager
    # `jax.random.key` costs about 0.5 ms on an H200)
    keys = [jax.random.key(1 + i) for i in range(repeats + 1)]
    run = lambda i: sample_states_batched(keys[i], program, schedule, states, [], observed, **options)  # noqa: E731
    return best_time(run, repeats)


def print_rates(label: str, columns: dict, flips: int) -> None:
    """One line: `label`, then each column's flips/ns (`columns[name] = (seconds, samples)`) and its
    ratio against the "THRML" column where there is one."""
    base = columns.get("THRML", (None,))[0]
    line = [label]
    for name, (seconds, _) in columns.items():
        ratio = f" ({base / seconds:.1f}x)" if base and name != "THRML" else ""
        line.append(f"{name} {flips / seconds / 1e9:.3f}{ratio}")
    print("   ".join(line), flush=True)


def with_patches(patches, run, *args):
    """`run(*args)` (a timing function) with attributes replaced while it is traced, given as
    (module, name, replacement); caches are cleared around it, so no compiled call of the other
    version is reused."""
    originals = [(module, name, getattr(module, name)) for module, name, _ in patches]
    for module, name, replacement in patches:
        setattr(module, name, replacement)
    jax.clear_caches()
    try:
        return run(*args)
    finally:
        for module, name, original in originals:
            setattr(module, name, original)
        jax.clear_caches()


def routes_off():
    """Patches (for `with_patches`) that keep THRML-style and batched calls off the lattice routes
    (uniform Ising and Potts tori on GPUs): they run the pairwise kernels, as before the routes."""
    from heatbath.kernels import batched, dispatch

    return [(dispatch, "torus_backend", lambda: None), (batched, "torus_backend", lambda devices=None: None)]
