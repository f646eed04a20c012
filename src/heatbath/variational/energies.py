r"""Energies of integer states for variational training, and adapters from heatbath models.

A variational model works with integer states `x` [batch, units] (values 0..K-1). Reverse-KL training
needs the target's energy of such states, $E(x)$, with the target $p(x) \propto e^{-\beta E(x)}$. Any
callable `energy(x) -> [batch]` works. This module provides

* `SpinGlassEnergy`: $E(s) = -\sum_{i<j} J_{ij} s_i s_j - \sum_i h_i s_i$ with $s = 2x - 1$, dense and fast,
  which also evaluates relaxed (one-hot) inputs for Gumbel-softmax / straight-through training;
* `energy_from_ebm`: the energy of any heatbath EBM on q's states, the nodes of `blocks` taken in order.
  An `IsingEBM` becomes a `SpinGlassEnergy` (its own β folded into J and h, so train with `beta=1`).
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from heatbath.block_management import Block, lookup_node_sd
from heatbath.errors import HeatbathError
from heatbath.models.ebm import AbstractEBM
from heatbath.models.ising import IsingEBM
from heatbath.validation import check_finite
from heatbath.variational.made import check_states

__all__ = ["SpinGlassEnergy", "EBMEnergy", "energy_from_ebm"]


class SpinGlassEnergy(eqx.Module):
    r"""$E(x) = -\sum_{i<j} J_{ij} s_i s_j - \sum_i h_i s_i$ for spins $s_i = 2x_i - 1$ (state 1 = spin +1).

    `couplings` is a symmetric [n, n] matrix with zero diagonal (each pair counted once in the sum);
    `fields` [n]. `relaxed(y)` evaluates the same polynomial at the relaxed spins $s = y_1 - y_0$ of
    (soft or straight-through) one-hot vectors `y` [batch, n, 2].
    """

    couplings: Float[Array, "n n"]
    fields: Float[Array, " n"]
    n_units: int = eqx.field(static=True)
    n_states: int = eqx.field(static=True)

    def __init__(self, couplings: Float[ArrayLike, "n n"], fields: Float[ArrayLike, " n"] | None = None):
        J = np.asarray(couplings, dtype=np.float64) if not isinstance(couplings, jax.core.Tracer) else couplings
        if np.ndim(J) != 2 or J.shape[0] != J.shape[1]:
            raise HeatbathError(f"couplings must be a square [n, n] matrix, got shape {tuple(np.shape(J))}.")
        n = J.shape[0]
        if isinstance(J, np.ndarray):
            if not np.all(np.isfinite(J)):
                raise HeatbathError("couplings hold NaN or infinity; pass finite numbers.")
            if not np.allclose(J, J.T) or np.any(np.diag(J) != 0):
                raise HeatbathError(
                    "couplings must be symmetric with a zero diagonal (J[i, j] = J[j, i] is the coupling of the pair)."
                )
        h = jnp.zeros(n) if fields is None else jnp.asarray(fields)
        if h.shape != (n,):
            raise HeatbathError(f"fields have shape {tuple(h.shape)}; expected ({n},), one per spin.")
        check_finite(fields, "fields")
        self.couplings = jnp.asarray(J, jnp.float32)
        self.fields = h.astype(jnp.float32)
        self.n_units, self.n_states = int(n), 2

    def spin_energy(self, s: Float[Array, "batch n"]) -> Float[Array, " batch"]:
        """The energy of real-valued spins (±1, or relaxed values in [-1, 1])."""
        exact = jax.lax.Precision.HIGHEST  # not TF32 on GPUs: energies enter log-weights
        return (-0.5 * jnp.einsum("bi,ij,bj->b", s, self.couplings, s, precision=exact)
                - jnp.matmul(s, self.fields, precision=exact))

    def __call__(self, x: Int[ArrayLike, "batch n"]) -> Float[Array, " batch"]:
        x = check_states(x, self.n_units, 2)
        return self.spin_energy(2.0 * x.astype(jnp.float32) - 1.0)

    def relaxed(self, y: Float[Array, "batch n 2"]) -> Float[Array, " batch"]:
        return self.spin_energy(y[..., 1] - y[..., 0])


class EBMEnergy(eqx.Module):
    """The energy of a heatbath EBM on integer states: unit `i` is the i-th node of `blocks` (concatenated).

    States are cast to each block's node dtype (bool for spin nodes: state 1 = True = spin +1; integer
    categories for categorical nodes). The energy is the EBM's own, which includes its β for Ising models.
    """

    ebm: AbstractEBM
    blocks: list[Block] = eqx.field(static=True)
    dtypes: tuple = eqx.field(static=True)
    n_units: int = eqx.field(static=True)
    n_states: int = eqx.field(static=True)

    def __init__(self, ebm: AbstractEBM, blocks: Sequence[Block], n_states: int = 2):
        self.ebm = ebm
        self.blocks = [Block(b) for b in blocks]
        self.dtypes = tuple(
            np.dtype(jax.tree.leaves(lookup_node_sd(b.node_type, ebm.node_shape_dtypes))[0].dtype) for b in self.blocks
        )
        self.n_units = sum(len(b) for b in self.blocks)
        self.n_states = int(n_states)

    def block_state(self, x: Int[Array, "batch units"]) -> list[Array]:
        """Split q's states into the per-block arrays [batch, len(block)] that the EBM reads."""
        out, start = [], 0
        for block, dtype in zip(self.blocks, self.dtypes):
            part = x[:, start : start + len(block)]
            out.append(part.astype(bool) if dtype == np.bool_ else part.astype(dtype))
            start += len(block)
        return out

    def __call__(self, x: Int[ArrayLike, "batch units"]) -> Float[Array, " batch"]:
        return _ebm_energies(self, check_states(x, self.n_units, self.n_states))


@eqx.filter_jit
def _ebm_energies(energy: EBMEnergy, x: Array) -> Array:
    return jax.vmap(lambda s: energy.ebm.energy(list(s), energy.blocks))(energy.block_state(x))


def energy_from_ebm(
    ebm: AbstractEBM, blocks: Sequence[Block] | None = None, *, n_states: int = 2
) -> SpinGlassEnergy | EBMEnergy:
    """An energy function of q's integer states for a heatbath model (use `beta=1`: the model's β is inside).

    `blocks` fixes the order of the units (default: all of the model's `nodes`, in order). An `IsingEBM`
    whose blocks cover each of its nodes exactly once becomes a dense `SpinGlassEnergy` (fast, and usable
    by the straight-through estimator); any other EBM is wrapped as `EBMEnergy` (calls `ebm.energy`).
    """
    if not isinstance(ebm, AbstractEBM):
        raise HeatbathError(
            f"energy_from_ebm needs a heatbath EBM (with an `energy` method), got {type(ebm).__name__}."
        )
    if blocks is None:
        if not hasattr(ebm, "nodes"):
            raise HeatbathError(f"{type(ebm).__name__} does not list its nodes; pass blocks=[Block(nodes), ...].")
        blocks = [Block(ebm.nodes)]
    blocks = [Block(b) for b in blocks]
    order = [n for b in blocks for n in b.nodes]
    if len(set(order)) != len(order):
        raise HeatbathError("blocks list a node more than once; each unit of q must be a different node.")
    if isinstance(ebm, IsingEBM) and set(order) == set(ebm.nodes):
        index = {node: i for i, node in enumerate(order)}
        beta = float(ebm.beta)
        h = np.zeros(len(order))
        h[[index[n] for n in ebm.nodes]] = beta * np.asarray(ebm.biases, np.float64)
        J = np.zeros((len(order), len(order)))
        for (u, v), w in zip(ebm.edges, np.asarray(ebm.weights, np.float64)):
            if u == v:
                raise HeatbathError(f"IsingEBM has a self-coupling on {u!r}; spins square to 1, so drop that edge.")
            i, j = index[u], index[v]
            J[i, j] += beta * w
            J[j, i] += beta * w
        return SpinGlassEnergy(J, h)
    return EBMEnergy(ebm, blocks, n_states)
