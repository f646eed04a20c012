"""The colour-split layout of a periodic L × L lattice shared by the multispin and Potts kernels.

Colour c of row i holds the L/2 sites of columns 2m + ((i + c) mod 2), m = 0 .. L/2 - 1, so a colour
is a `[L, L/2, ...]` array and every neighbour of a colour-c site is, in the other colour, the same
entry of the rows above and below, the same entry of its own row, and the entry m - 1 (when i + c is
even) or m + 1 (when odd) of its own row.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array

__all__ = ["colour_sites", "join_colours", "side_is_previous"]


def colour_sites(x: Array, colour: int) -> Array:
    """`[L, L/2, ...]`: the sites of `colour` of a lattice `x` of shape `[L, L, ...]`, by row and m."""
    L = x.shape[0]
    blocks = x.reshape(L // 2, 2, L // 2, 2, *x.shape[2:])  # [row pair, row parity, column pair, column parity]
    rows = [blocks[:, a, :, (a + colour) % 2] for a in (0, 1)]
    return jnp.stack(rows, axis=1).reshape(L, L // 2, *x.shape[2:])


def join_colours(colours: tuple[Array, Array]) -> Array:
    """The `[L, L, ...]` lattice from both colours' `colour_sites` (its inverse)."""
    L, M = colours[0].shape[:2]
    rest = colours[0].shape[2:]
    by_parity = [c.reshape(L // 2, 2, M, *rest) for c in colours]  # [row pair, row parity, m, ...]
    # Row parity a holds colour c at column parity (a + c) % 2, i.e. column parity b holds colour (a + b) % 2.
    rows = [jnp.stack([by_parity[(a + b) % 2][:, a] for b in (0, 1)], axis=2) for a in (0, 1)]
    return jnp.stack(rows, axis=1).reshape(L, L, *rest)


def side_is_previous(row, colour: int):
    """True where a site of `colour` in row `row` (an int or an integer array, numpy or jax) has its
    fourth neighbour at entry m - 1 of the other colour's row, False where at m + 1."""
    return (row + colour) % 2 == 0
