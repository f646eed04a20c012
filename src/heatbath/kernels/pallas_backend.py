"""Whether the Pallas (Triton) GPU kernels can run, and which implementation a kernel call takes.

Every kernel with a Pallas version also has a jax.numpy version that gives the same results; the
Pallas one runs only where Pallas' Triton backend imports and every device of the call is a CUDA GPU.
"""

from __future__ import annotations

import functools

import jax

from heatbath.errors import HeatbathError

__all__ = ["pallas_available", "pallas_runs_on", "resolve_backend", "sweeps_per_step", "samples_per_step", "BACKENDS", "SWEEPS_PER_STEP"]

BACKENDS = ("auto", "pallas", "jnp", "interpret")
SWEEPS_PER_STEP = 8  # sweeps per step of a GPU sweep loop (`sweeps_per_step`); read at trace time


@functools.cache
def pallas_available() -> bool:
    """True on a CUDA GPU where Pallas' Triton backend imports."""
    if jax.default_backend() != "gpu":
        return False
    try:
        from jax.experimental import pallas  # noqa: F401
        from jax.experimental.pallas import triton  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the jaxlib build
        return False
    return True


def pallas_runs_on(devices=()) -> bool:
    """True when Pallas is available and every one of `devices` (default: the default backend's) is a GPU."""
    return pallas_available() and all(d.platform == "gpu" for d in devices)


def resolve_backend(backend: str, devices=()) -> str:
    """'pallas' for `backend="auto"` when `pallas_runs_on(devices)`, else 'jnp'; explicit choices
    ('pallas', 'jnp', or 'interpret': the Pallas kernel interpreted, for tests) are checked."""
    if backend not in BACKENDS:
        raise HeatbathError(f"backend must be one of {BACKENDS}; got {backend!r}.")
    on_gpus = pallas_runs_on(devices)
    if backend == "auto":
        return "pallas" if on_gpus else "jnp"
    if backend == "pallas" and not on_gpus:
        raise HeatbathError("backend='pallas' needs CUDA GPUs with Pallas' Triton backend; use 'jnp' or 'auto'.")
    return backend


def sweeps_per_step(backend: str, n_sweeps: int) -> int:
    """Sweeps per step of a loop over `n_sweeps` sweeps of Pallas kernels (`fori_loop`'s unroll).

    On a GPU every loop step costs about as much as a whole sweep of a small lattice (256² sites, 64
    chains): 8 sweeps per step took a THRML-style lattice call from 242-294 to 499-582 flips/ns on an
    H200 (BENCHMARKS.md). Elsewhere a step costs next to nothing, and unrolling only lengthens
    compilation."""
    return max(1, min(SWEEPS_PER_STEP, n_sweeps)) if backend == "pallas" else 1


def samples_per_step(backend: str, n_samples: int, steps_per_sample: int) -> int:
    """Samples per step of a loop over `n_samples` samples `steps_per_sample` sweeps apart (`scan`'s
    unroll): on GPUs enough for about SWEEPS_PER_STEP sweeps a step, as `sweeps_per_step` gives a
    sweep loop. Many samples of a small model (one chain of one categorical node, 10⁵ samples a call,
    as in the Benford experiment) are a loop of one-sweep steps, each costing as much as a sweep."""
    return max(1, min(n_samples, SWEEPS_PER_STEP // steps_per_sample)) if backend == "pallas" else 1
