"""Checks on user-supplied arrays that turn silent wrong answers into clear errors."""

from __future__ import annotations

import jax
import numpy as np

from heatbath.errors import HeatbathError

__all__ = ["check_finite", "is_concrete"]


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
