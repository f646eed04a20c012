"""Wall time to build a 2D Ising model and its two-block sampling program, heatbath vs THRML.

For periodic L × L lattices (J = 1 on every nearest-neighbour edge, zero field, β = ln(1 + √2)/2, the
critical point) both libraries get the same node order, the same edge list and the same two
checkerboard blocks; the timed part is `Block`s + `IsingEBM` + `IsingSamplingProgram` (until every
array of the program is ready). Each measurement runs in a fresh subprocess after a small warm-up
build, so one-time costs (JAX start-up, first compilations) are not counted and a slow THRML build
can be stopped by a timeout; with `--repeats k` the best of k fresh runs is reported (on a shared
machine the minimum is the least disturbed estimate). A third column times heatbath's whole path from nothing:
`lattice_2d(L)` + `Lattice.blocks()` + model + program.

Run with a Python that has both libraries (THRML in its own venv so it cannot change our JAX):

    .venv-bench/bin/python bench/build_time.py [--sizes 10000 100000 1000000] [--thrml-timeout 900] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time

BETA = math.log(1.0 + math.sqrt(2.0)) / 2.0
WARMUP_SIDE = 8


def torus_edges(side: int):
    """Nearest-neighbour edges of a periodic side × side lattice, row-major ids, each edge once."""
    import numpy as np

    grid = np.arange(side * side, dtype=np.int64).reshape(side, side)
    down = np.stack([grid.ravel(), np.roll(grid, -1, axis=0).ravel()], axis=1)
    right = np.stack([grid.ravel(), np.roll(grid, -1, axis=1).ravel()], axis=1)
    edges = np.concatenate([down, right])
    return edges[np.argsort(edges[:, 0], kind="stable")]


def _library(name: str):
    if name == "thrml":
        from thrml.block_management import Block
        from thrml.models.ising import IsingEBM, IsingSamplingProgram
        from thrml.pgm import SpinNode
    else:
        from heatbath.block_management import Block
        from heatbath.models.ising import IsingEBM, IsingSamplingProgram
        from heatbath.pgm import SpinNode
    return Block, IsingEBM, IsingSamplingProgram, SpinNode


def _build_same_model(lib: str, side: int) -> dict:
    """Time Blocks + IsingEBM + IsingSamplingProgram on identical inputs; node and edge lists are untimed."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    Block, IsingEBM, IsingSamplingProgram, SpinNode = _library(lib)
    edge_index = torus_edges(side)
    nodes = [SpinNode() for _ in range(side * side)]
    node_array = np.fromiter(nodes, dtype=object, count=len(nodes))
    edges = list(zip(node_array[edge_index[:, 0]].tolist(), node_array[edge_index[:, 1]].tolist()))
    parity = np.indices((side, side)).sum(axis=0).ravel() % 2
    even, odd = node_array[parity == 0].tolist(), node_array[parity == 1].tolist()
    biases, weights = np.zeros(len(nodes), np.float32), np.ones(len(edges), np.float32)

    start = time.perf_counter()
    blocks = [Block(even), Block(odd)]
    model = IsingEBM(nodes, edges, jnp.asarray(biases), jnp.asarray(weights), jnp.asarray(BETA, jnp.float32))
    program = IsingSamplingProgram(model, blocks, [])
    jax.block_until_ready([x for x in jax.tree.leaves(program) if isinstance(x, jax.Array)])
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "n_nodes": len(nodes), "n_edges": len(edges)}


def _build_heatbath_from_scratch(side: int) -> dict:
    """heatbath's own path: lattice builder, checkerboard blocks, model, program."""
    import jax
    import jax.numpy as jnp

    from heatbath.graphs import lattice_2d
    from heatbath.models import IsingEBM, IsingSamplingProgram

    start = time.perf_counter()
    lattice = lattice_2d(side, periodic=True)
    blocks = lattice.blocks()
    n, e = len(lattice.nodes), len(lattice.edges)
    model = IsingEBM(lattice.nodes, lattice.edges, jnp.zeros(n), jnp.ones(e), jnp.asarray(BETA, jnp.float32))
    program = IsingSamplingProgram(model, blocks, [])
    jax.block_until_ready([x for x in jax.tree.leaves(program) if isinstance(x, jax.Array)])
    return {"seconds": time.perf_counter() - start, "n_nodes": n, "n_edges": e}


def worker(kind: str, side: int) -> None:
    build = _build_heatbath_from_scratch if kind == "heatbath-scratch" else lambda s: _build_same_model(kind, s)
    build(WARMUP_SIDE)
    print(json.dumps(build(side)))


def _measure(kind: str, side: int, timeout: float, repeats: int = 1) -> dict | None:
    """Best of `repeats` builds, each in a fresh interpreter; None if one did not finish within `timeout` s."""
    runs = [_measure_once(kind, side, timeout) for _ in range(repeats)]
    if any(r is None for r in runs):
        return None
    return min(runs, key=lambda r: r["seconds"])


def _measure_once(kind: str, side: int, timeout: float) -> dict | None:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--side", str(side)]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        raise RuntimeError(f"{kind} worker failed for side {side}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _versions() -> str:
    import importlib.metadata as md

    import jax
    import numpy

    parts = [f"python {platform.python_version()}", f"jax {jax.__version__}", f"numpy {numpy.__version__}"]
    for dist in ("heatbath", "thrml"):
        try:
            parts.append(f"{dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            parts.append(f"{dist} (not installed)")
    return ", ".join(parts) + f"; {os.cpu_count()} CPUs visible, {platform.machine()}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="spins (≈ L²)")
    parser.add_argument("--thrml-timeout", type=float, default=900.0, help="seconds allowed per THRML build")
    parser.add_argument("--repeats", type=int, default=3, help="fresh runs per cell; the fastest is reported")
    parser.add_argument("--heatbath-timeout", type=float, default=900.0, help="seconds allowed per heatbath build")
    parser.add_argument("--worker", choices=["heatbath", "thrml", "heatbath-scratch"], help=argparse.SUPPRESS)
    parser.add_argument("--side", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.side)
        return

    print(f"# {_versions()}; best of {args.repeats} fresh runs")
    print("| spins | edges | heatbath (s) | THRML (s) | THRML / heatbath | heatbath incl. lattice_2d + blocks() (s) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        side = max(2, round(math.sqrt(size)))
        ours = _measure("heatbath", side, args.heatbath_timeout, args.repeats)
        scratch = _measure("heatbath-scratch", side, args.heatbath_timeout, args.repeats)
        theirs = _measure("thrml", side, args.thrml_timeout, args.repeats)
        n, e = side * side, 2 * side * side
        ours_s = f"{ours['seconds']:.3f}" if ours else f">{args.heatbath_timeout:.0f}"
        theirs_s = f"{theirs['seconds']:.2f}" if theirs else f">{args.thrml_timeout:.0f}"
        if ours and theirs:
            ratio = f"{theirs['seconds'] / ours['seconds']:.1f}×"
        elif ours:
            ratio = f">{args.thrml_timeout / ours['seconds']:.0f}×"
        else:
            ratio = "n/a"
        scratch_s = f"{scratch['seconds']:.3f}" if scratch else f">{args.heatbath_timeout:.0f}"
        print(f"| {n:,} ({side}²) | {e:,} | {ours_s} | {theirs_s} | {ratio} | {scratch_s} |", flush=True)


if __name__ == "__main__":
    main()
