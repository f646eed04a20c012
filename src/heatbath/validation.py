"""Checks on user-supplied arrays that turn silent wrong answers into clear errors."""

from __future__ import annotations

import jax
import numpy as np

from heatbath.errors import HeatbathError

__all__ = ["check_finite", "is_concrete", "array_namespace"]


def is_concrete(x) -> bool:
    """True if `x` holds actual values (not a tracer inside jit/grad/vmap)."""
    return not isinstance(x, jax.core.Tracer)


def check_finite(x, what: str) -> None:
    """Raise if a concrete array holds NaN or infinity (tracers are left alone: their values are unknown)."""
    if x is None or not is_concrete(x):
        return
    arr = np.asarray(x)
    if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise HeatbathError(f"{what} contain {bad} NaN or infinite value(s); replace them with finite numbers.")


def array_namespace(*arrays):
    """numpy when every array holds concrete values, else jax.numpy.

    Program construction reshapes and gathers parameters once; doing that in numpy on concrete
    arrays avoids compiling a small XLA kernel per shape, while traced parameters (inside jit or
    grad, e.g. during training) keep flowing through jax.numpy.
    """
    return np if all(is_concrete(a) for a in arrays) else jax.numpy
