r"""Checkerboard heat-bath sampler for the q-state Potts model on the periodic 2D lattice, many chains.

The model is $P(s) \propto \exp\big(\beta J \sum_{\langle ij \rangle} \delta(s_i, s_j) + \beta \sum_i h_{s_i}\big)$
on an $L \times L$ torus, $s_i \in \{0, \dots, q-1\}$. With even $L$ the two checkerboard colours are
independent given each other, and a site's conditional depends on its four neighbours' states only:
$P(s_i = k) \propto \exp(\beta J n_k + \beta h_k)$, $n_k$ the number of neighbours in state $k$.

A table instead of arithmetic. There are only $q^4$ neighbour configurations, so a run computes,
once, the conditional distribution of every configuration as a Walker alias table ($q^5$ uint32
words: 12 KB for q = 5, which stays in cache; `alias_table`). A site update is then four neighbour
reads, a table index, one random 32-bit word $u$ whose high part picks a column and whose low part
decides between the column's own state and its alias (`draw_states`): one table read, no
exponentials, exact to about $2^{-29}$ in each probability.

Layout: each colour is a `[L, L/2, chains]` uint8 array, chains contiguous (site m of row i is column
$2m + ((i + c) \bmod 2)$ for colour c, `heatbath.kernels.checkerboard_layout`), so every neighbour of a
colour-c site is the same or the next/previous entry of the other colour's row, or the row above or
below. Random words: update n (colour c of sweep t is n = 2t + c) has the key `mix32(n ^ w0) ^ w1`
from the run's key words (distinct per update), and entry g (flat over rows, sites and chains) draws
`mix32(g·golden ^ key)`.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Key, UInt8, UInt32

from heatbath.errors import HeatbathError
from heatbath.kernels.checkerboard import check_run_length
from heatbath.kernels.checkerboard_layout import (
    colour_sites,
    join_colours,
    side_is_previous,
)
from heatbath.kernels.counter_rng import iota_hashes, key_words, mix32
from heatbath.kernels.pallas_backend import resolve_backend, sweeps_per_step
from heatbath.validation import check_finite, is_concrete

__all__ = ["PottsLatticeState", "init_potts_lattice", "run_potts_lattice", "potts_energy_per_site", "MAX_STATES"]

MAX_STATES = 8  # the alias table holds q^5 words: 128 KB at q = 8, and an alias fits in 3 bits


class PottsLatticeState(NamedTuple):
    """States (uint8, 0..q-1) of many independent chains of an L×L periodic Potts lattice."""

    states: UInt8[Array, "L L chains"]


def _check(states: Array, q: int) -> int:
    if not 2 <= q <= MAX_STATES:
        raise HeatbathError(f"The Potts lattice kernel takes 2 <= q <= {MAX_STATES} states; got q={q}.")
    if states.ndim != 3 or states.shape[0] != states.shape[1]:
        raise HeatbathError(f"Potts states must have shape [L, L, chains]; got {tuple(states.shape)}.")
    if states.dtype != jnp.uint8:
        raise HeatbathError(f"Potts states must be uint8 (0..q-1); got {states.dtype}. Use states.astype(jnp.uint8).")
    L = states.shape[0]
    if L < 4 or L % 2:
        raise HeatbathError(f"The checkerboard Potts sampler needs an even lattice side L >= 4; got L={L}.")
    return L


def init_potts_lattice(key: Key[Array, ""], L: int, n_chains: int, q: int) -> PottsLatticeState:
    """Independent uniform states per site and chain."""
    if n_chains < 1:
        raise HeatbathError(f"n_chains must be at least 1; got {n_chains}.")
    states = jax.random.randint(key, (L, L, n_chains), 0, q).astype(jnp.uint8)
    _check(states, q)
    return PottsLatticeState(states)


def _neighbours(other: Array, colour: int) -> tuple[Array, Array, Array, Array]:
    """The four neighbours of each colour-`colour` site, from the other colour's `[L, M, chains]` array."""
    L = other.shape[0]
    to_previous = side_is_previous(np.arange(L), colour)[:, None, None]
    side = jnp.where(to_previous, jnp.roll(other, 1, axis=1), jnp.roll(other, -1, axis=1))
    return jnp.roll(other, 1, axis=0), jnp.roll(other, -1, axis=0), other, side


def conditional_probabilities(beta, J, field, q: int) -> Float[Array, "configs q"]:
    """P(s = k | neighbours) for every configuration, config = Σ_d s_d q^d over the four neighbours."""
    configs = np.arange(q**4)
    digits = (configs[:, None] // q ** np.arange(4)) % q  # [configs, 4]
    counts = (digits[:, :, None] == np.arange(q)).sum(1)  # [configs, q]
    return jax.nn.softmax(beta * (J * jnp.asarray(counts, jnp.float32) + field[None, :]), axis=1)


def alias_table(probs: Float[Array, "configs q"]) -> UInt32[Array, "configs q"]:
    """Walker's alias table of each row, one uint32 per (configuration, column): the column's
    probability of keeping its own state, times 2**32, in the top 29 bits, its alias in the low 3.

    Built with Vose's pairing, vectorised over rows: q - 1 times, the smallest remaining scaled
    weight w_s (< 1 unless all are 1) keeps w_s and lends the rest of its column to the largest, whose
    weight drops by 1 - w_s. Column k then yields state k with probability w_k/q plus the columns aliased
    to it, which adds up to the row's probabilities."""
    n, q = probs.shape
    weight = probs * q
    keep = jnp.ones((n, q), jnp.float32)
    alias = jnp.broadcast_to(jnp.arange(q), (n, q))
    open_ = jnp.ones((n, q), bool)
    rows = jnp.arange(n)
    for _ in range(q - 1):
        small = jnp.argmin(jnp.where(open_, weight, jnp.inf), axis=1)
        open_ = open_.at[rows, small].set(False)
        large = jnp.argmax(jnp.where(open_, weight, -jnp.inf), axis=1)
        w_small = jnp.clip(weight[rows, small], 0.0, 1.0)
        keep = keep.at[rows, small].set(w_small)
        alias = alias.at[rows, small].set(large)
        weight = weight.at[rows, large].add(w_small - 1.0)
    threshold = jnp.clip(jnp.round(keep * 2.0**32), 0, 2.0**32 - 1).astype(jnp.uint32)
    return (threshold & jnp.uint32(~7 & 0xFFFFFFFF)) | alias.astype(jnp.uint32)


def draw_states(u: UInt32[Array, "*n"], config, lookup, q: int) -> Array:
    """States from uniform words `u` through the alias table: column k = ⌊u·q / 2³²⌋ (the high word of
    u·q), kept when the low word (uniform on its column) is below the column's threshold, else its
    alias. `lookup(i)` reads entry i of the flat table. One table read per site."""
    column = ((u >> jnp.uint32(16)) * jnp.uint32(q) + (((u & jnp.uint32(0xFFFF)) * jnp.uint32(q)) >> jnp.uint32(16))) >> jnp.uint32(16)
    word = lookup(config * q + column.astype(jnp.int32))
    keep = (u * jnp.uint32(q)) < (word & jnp.uint32(~7 & 0xFFFFFFFF))
    return jnp.where(keep, column, word & jnp.uint32(7))


def potts_update(other, colour: int, table, q: int, hashes, key) -> UInt8[Array, "L M chains"]:
    """New states of colour `colour` (jax.numpy): site words `mix32(hashes ^ key)`, `hashes` broadcast
    to `[L, M, chains]`."""
    up, down, same, side = (x.astype(jnp.int32) for x in _neighbours(other, colour))
    config = up + q * (down + q * (same + q * side))
    flat = table.reshape(-1)
    return draw_states(mix32(hashes ^ key), config, lambda i: flat[i], q).astype(jnp.uint8)


def _update_key(words, update) -> UInt32[Array, ""]:
    return mix32(jnp.asarray(update, jnp.uint32) ^ words[0]) ^ words[1]


def _energy(colours, J, field, q: int) -> Float[Array, " chains"]:
    """E / L² per chain, E = -J Σ_bonds δ(s_i, s_j) - Σ_i h_{s_i}: every bond has one colour-0 end."""
    even, odd = colours
    L = even.shape[0]
    agree = sum(jnp.sum((even == n).astype(jnp.int32), axis=(0, 1)) for n in _neighbours(odd, 0))
    onehot = [jnp.sum((c[..., None] == jnp.arange(q, dtype=jnp.uint8)).astype(jnp.int32), axis=(0, 1)) for c in colours]
    field_sum = ((onehot[0] + onehot[1]).astype(jnp.float32) * field[None, :]).sum(1)
    return -(J * agree.astype(jnp.float32) + field_sum) / (L * L)


def _colour_update(other, colour: int, table, q: int, hashes, keys, t, backend: str):
    if backend == "jnp":
        return potts_update(other, colour, table, q, hashes, keys[2 * t + colour])
    from heatbath.kernels.potts_pallas import pallas_potts_update

    return pallas_potts_update(other, colour, q, table, keys, t, interpret=backend == "interpret")


@partial(jax.jit, static_argnames=("q", "n_sweeps", "measure_every", "backend"))
def _run(key, states, beta, J, field, *, q: int, n_sweeps: int, measure_every: int, backend: str):
    beta, J = jnp.asarray(beta, jnp.float32), jnp.asarray(J, jnp.float32)
    field = jnp.zeros(q, jnp.float32) if field is None else jnp.asarray(field, jnp.float32)
    words = key_words(key)
    table = alias_table(conditional_probabilities(beta, J, field, q))
    colours = (colour_sites(states, 0), colour_sites(states, 1))
    shape = colours[0].shape
    hashes = iota_hashes(0, shape)

    def measured_block(colours, block):
        # The keys of every update of the block, computed before its loop: a GPU sweep is then two
        # kernel launches (the kernel reads its key from the array with the loop counter).
        first = (block * measure_every).astype(jnp.uint32)
        keys = _update_key(words, 2 * first + jnp.arange(2 * measure_every, dtype=jnp.uint32))

        def one_sweep(t, colours):
            even = _colour_update(colours[1], 0, table, q, hashes, keys, t, backend)
            return even, _colour_update(even, 1, table, q, hashes, keys, t, backend)

        colours = jax.lax.fori_loop(0, measure_every, one_sweep, colours, unroll=sweeps_per_step(backend, measure_every))
        return colours, _energy(colours, J, field, q)

    colours, energy = jax.lax.scan(measured_block, colours, jnp.arange(n_sweeps // measure_every))
    return join_colours(colours), energy


def run_potts_lattice(
    key: Key[Array, ""],
    state: PottsLatticeState,
    beta: ArrayLike,
    n_sweeps: int,
    *,
    q: int,
    J: ArrayLike = 1.0,
    field: ArrayLike | None = None,
    measure_every: int = 1,
    backend: str = "auto",
) -> tuple[PottsLatticeState, Float[Array, "measurements chains"]]:
    """Run `n_sweeps` checkerboard heat-bath sweeps; returns the final state and E/L² per chain after
    every `measure_every`-th sweep. `field` (q values, default zero) adds β·field[s_i] per site.
    Compiled once per (shape, q, n_sweeps, measure_every); `beta`, `J` and `field` are traced.
    `backend`: "auto" runs the Pallas kernel (`heatbath.kernels.potts_pallas`) on a CUDA GPU and the
    jax.numpy update elsewhere; "jnp", "pallas" or "interpret" (the kernel interpreted, for tests) force
    one. All give the same states."""
    _check(state.states, q)
    n_sweeps, measure_every = check_run_length(n_sweeps, measure_every)
    if is_concrete(state.states) and bool(_any_at_least(state.states, q)):
        raise HeatbathError(f"Potts states must lie in 0..{q - 1} for q={q}; got a state >= {q}.")
    if int(np.prod(state.states.shape)) >= 2**31:
        raise HeatbathError("The Potts lattice kernel numbers sites × chains in 31 bits: run fewer chains per call.")
    if field is not None and np.shape(field) != (q,):
        raise HeatbathError(f"field must hold one value per state, shape ({q},); got {np.shape(field)}.")
    # Checked as given (a Python float needs no transfer) and converted inside `_run`: every eager
    # step before the compiled call cost about 0.5 ms on an H200, as much as 4 sweeps of 1,000 lattices.
    for name, value in (("beta", beta), ("J", J), ("field", field)):
        check_finite(value, f"Potts lattice {name}")
    backend = resolve_backend(backend)
    states, energy = _run(
        key, state.states, beta, J, field, q=q, n_sweeps=n_sweeps, measure_every=measure_every, backend=backend
    )
    return PottsLatticeState(states), energy


@jax.jit
def _any_at_least(states, q) -> Array:
    """Whether any state is >= q: one compiled dispatch (eager it is two)."""
    return jnp.any(states >= q)


@partial(jax.jit, static_argnames=("q",))
def potts_energy_per_site(states: UInt8[Array, "L L chains"], J: ArrayLike = 1.0, field=None, *, q: int):
    """E/L² per chain of int states, E = -J Σ_bonds δ(s_i, s_j) - Σ_i field[s_i]."""
    field = jnp.zeros(q, jnp.float32) if field is None else jnp.asarray(field, jnp.float32)
    return _energy((colour_sites(states, 0), colour_sites(states, 1)), jnp.asarray(J, jnp.float32), field, q)
