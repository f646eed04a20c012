r"""Checkerboard heat-bath sampler for the periodic 2D square-lattice Ising model, many chains at once.

The model is $E(s) = -J \sum_{\langle ij \rangle} s_i s_j - h \sum_i s_i$ on an $L \times L$ torus, sampled
at inverse temperature $\beta$. With even $L$ the lattice is bipartite: the two checkerboard colours
are independent given each other, so a sweep draws every spin of one colour from its exact
conditional $P(s_i = +1 \mid \text{rest}) = \sigma(2\beta(J \sum_{j \sim i} s_j + h))$, then every
spin of the other colour.

Layout: spins are int8 of shape `[L, L, chains]`, chains on the minor (contiguous) axis, so that the
neighbour shifts (`jnp.roll` on the lattice axes) move whole contiguous rows of chains and every
elementwise step vectorises over chains. Inside a run the lattice is held as its four 2x2
sublattices, so a colour update computes only the spins it redraws. Each spin consumes one 32-bit
random word per update: every chain gets a seed per sweep (the Threefry-2x32-20 cipher of the counter
(chain, sweep number) under a key drawn once per call), and the word of a site is a 32-bit avalanche
mix of the site's Weyl number and that seed (`counter_rng.update_words`), so sites of one chain and
sweep never share a word and about 8 integer operations replace a cipher call per spin. The
conditional probability is compared with the word as an integer threshold, exactly to float32
precision even for the tiny flip probabilities of low temperatures.

The API is pure functions over NamedTuple states (`init_lattice`, `sweep`, `run_lattice`). When L is
a multiple of 64, `sweep` and `run_lattice` run the multispin kernel (`heatbath.kernels.multispin`:
one bit per spin, a Pallas kernel on GPUs) on the same int8 states unless `method="bytes"` is asked for.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int8, Key, UInt32

from heatbath.errors import HeatbathError
from heatbath.kernels.counter_rng import key_words, threefry2x32, update_words
from heatbath.validation import check_finite

__all__ = [
    "LatticeIsingState",
    "Measurements",
    "init_lattice",
    "sweep",
    "run_lattice",
    "energy_per_site",
    "magnetization_per_site",
    "heat_bath_thresholds",
    "float32_parameters",
]


class LatticeIsingState(NamedTuple):
    """Spins (+1/-1 as int8) of many independent chains of an L×L periodic lattice."""

    spins: Int8[Array, "L L chains"]


class Measurements(NamedTuple):
    """Per-chain traces, one row per measurement."""

    energy: Float[Array, "measurements chains"]
    """Energy per site, $E / L^2$."""
    magnetization: Float[Array, "measurements chains"]
    """Signed magnetisation per site, $\\sum_i s_i / L^2$."""


# ---------------------------------------------------------------------------------------------------
# The sampler.


def _check_spins(spins: Array) -> int:
    if spins.ndim != 3 or spins.shape[0] != spins.shape[1]:
        raise HeatbathError(
            f"Lattice spins must have shape [L, L, chains]; got {tuple(spins.shape)}. Create them with init_lattice."
        )
    if spins.dtype != jnp.int8:
        raise HeatbathError(f"Lattice spins must be int8 (+1/-1); got {spins.dtype}. Use spins.astype(jnp.int8).")
    return _check_side(spins.shape[0])


def _check_side(L: int) -> int:
    if L < 2 or L % 2:
        raise HeatbathError(
            f"The checkerboard sampler needs an even lattice side L >= 2 (an odd periodic lattice is not "
            f"bipartite, so one colour would hold neighbouring spins); got L={L}."
        )
    return L


def init_lattice(key: Key[Array, ""], L: int, n_chains: int, *, ordered: bool = False) -> LatticeIsingState:
    """Initial spins: independent uniform ±1 per site and chain, or all +1 when `ordered`."""
    _check_side(L)
    if n_chains < 1:
        raise HeatbathError(f"n_chains must be at least 1; got {n_chains}.")
    if ordered:
        return LatticeIsingState(jnp.ones((L, L, n_chains), jnp.int8))
    up = jax.random.bernoulli(key, 0.5, (L, L, n_chains))
    return LatticeIsingState(jnp.where(up, jnp.int8(1), jnp.int8(-1)))


# Internally a lattice is four sublattices, `quads[a][b][r, p] = spins[2r + a, 2p + b]`. The two
# colours are {(0,0), (1,1)} and {(0,1), (1,0)}, so a colour update touches exactly the spins it
# redraws, and each sublattice's four neighbours are two other sublattices, one of them shifted by one.
_Quads = tuple[tuple[Array, Array], tuple[Array, Array]]
_COLOURS = (((0, 0), (1, 1)), ((0, 1), (1, 0)))


def _split(spins: Int8[Array, "L L chains"]) -> _Quads:
    L, _, n_chains = spins.shape
    blocks = spins.reshape(L // 2, 2, L // 2, 2, n_chains)
    return tuple(tuple(blocks[:, a, :, b, :] for b in (0, 1)) for a in (0, 1))


def _join(quads: _Quads) -> Int8[Array, "L L chains"]:
    rows = [jnp.stack(quads[a], axis=2) for a in (0, 1)]  # [L/2, L/2, 2, chains], indexed [r, p, b]
    blocks = jnp.stack(rows, axis=1)  # [L/2, 2, L/2, 2, chains], indexed [r, a, p, b]
    L2, _, _, _, n_chains = blocks.shape
    return blocks.reshape(2 * L2, 2 * L2, n_chains)


def _neighbour_sum(quads: _Quads, a: int, b: int) -> Int8[Array, "L/2 L/2 chains"]:
    # Site (2r+a, 2p+b): rows 2r+a±1 live in sublattice (1-a, b) at rows r and r-1 (a=0) or r+1 (a=1);
    # columns 2p+b±1 live in sublattice (a, 1-b) likewise.
    vertical, horizontal = quads[1 - a][b], quads[a][1 - b]
    return (
        vertical
        + jnp.roll(vertical, 1 if a == 0 else -1, axis=0)
        + horizontal
        + jnp.roll(horizontal, 1 if b == 0 else -1, axis=1)
    )


def float32_parameters(beta, J, h) -> tuple[Float[Array, ""], Float[Array, ""], Float[Array, ""]]:
    """beta, J and h as float32 arrays, from Python numbers or arrays. Called inside the compiled
    lattice calls, not before them: every eager step before a compiled call cost about 0.5 ms on an
    H200, as much as 100 sweeps of a 256² lattice, so the public functions check their parameters as
    given (a Python float needs no transfer) and leave the conversion to the compiled call."""
    return tuple(jnp.asarray(v, jnp.float32) for v in (beta, J, h))


def heat_bath_thresholds(beta, J, h):
    """Per neighbour sum (-4, -2, 0, 2, 4): whether +1 is the likelier value, and the 32-bit threshold
    `t` with P(bits < t) = t / 2**32 equal to the less likely value's probability. Thresholding the
    minority (probability <= 1/2) keeps float32's relative precision for tiny probabilities."""
    x = (2.0 * beta) * (J * jnp.arange(-4, 5, 2, dtype=jnp.float32) + h)
    minority = jax.nn.sigmoid(-jnp.abs(x))
    return x >= 0, jnp.round(minority * 2.0**32).astype(jnp.uint32)


def _update_colour(quads: _Quads, bits: UInt32[Array, "4 L/2 L/2 chains"], colour: int, tables) -> _Quads:
    plus_likelier, threshold = tables
    new = [list(row) for row in quads]
    for a, b in _COLOURS[colour]:
        field = _neighbour_sum(quads, a, b)
        # A chain of selects over the five possible sums: about 3x faster than a table gather on CPU.
        likelier, t = plus_likelier[4], threshold[4]
        for k, value in enumerate((-4, -2, 0, 2)):
            likelier = jnp.where(field == value, plus_likelier[k], likelier)
            t = jnp.where(field == value, threshold[k], t)
        up = likelier ^ (bits[2 * a + b] < t)
        new[a][b] = jnp.where(up, jnp.int8(1), jnp.int8(-1))
    return tuple(tuple(row) for row in new)


def _chain_seeds(words, index, n_chains: int) -> UInt32[Array, " chains"]:
    """One seed per chain for sweep `index`: the cipher of the counter pair (chain, index)."""
    chain = jnp.arange(n_chains, dtype=jnp.uint32)
    return threefry2x32(words, chain, jnp.full_like(chain, jnp.asarray(index, jnp.uint32)))[0]


def _sweep_quads(seeds: UInt32[Array, " chains"], quads: _Quads, tables) -> _Quads:
    L2, _, n_chains = quads[0][0].shape
    sites = jax.lax.iota(jnp.uint32, 4 * L2 * L2)
    bits = update_words(seeds, sites).reshape(4, L2, L2, n_chains)  # one word per site and sweep
    # The colours run as two iterations of a loop rather than inline: XLA:CPU would otherwise fuse the
    # first colour's update into the second's neighbour reads and recompute it per read (measured 10x
    # slower), and it strips optimization barriers before fusion.
    updates = [partial(_update_colour, bits=bits, colour=colour, tables=tables) for colour in (0, 1)]
    return jax.lax.fori_loop(0, 2, lambda colour, q: jax.lax.switch(colour, updates, q), quads)


@jax.jit
def _sweep_bytes(key, spins, beta, J, h, index):
    seeds = _chain_seeds(key_words(key), index, spins.shape[2])
    return _join(_sweep_quads(seeds, _split(spins), heat_bath_thresholds(*float32_parameters(beta, J, h))))


def sweep(
    key: Key[Array, ""],
    state: LatticeIsingState,
    beta: ArrayLike,
    J: ArrayLike = 1.0,
    h: ArrayLike = 0.0,
    *,
    index: ArrayLike = 0,
    method: str = "auto",
) -> LatticeIsingState:
    """One heat-bath sweep: every spin of colour (i+j) even, then every spin of colour (i+j) odd.

    The random words are counter-based in (key, `index`): sweeps under one key need distinct `index`
    values (`run_lattice` numbers them 0, 1, 2, ...). `method` chooses the kernel as in `run_lattice`.
    """
    _check_spins(state.spins)
    _check_finite(beta, J, h)  # as given; converted inside the compiled sweep (see `float32_parameters`)
    if _use_packed(state.spins.shape[0], method):
        from heatbath.kernels.multispin_run import sweep_packed
        from heatbath.kernels.pallas_backend import resolve_backend

        spins = sweep_packed(state.spins, key, index, beta, J, h, backend=resolve_backend("auto"))
        return LatticeIsingState(spins)
    return LatticeIsingState(_sweep_bytes(key, state.spins, beta, J, h, index))


_METHODS = ("auto", "packed", "bytes")


def check_run_length(n_sweeps, measure_every) -> tuple[int, int]:
    """`(n_sweeps, measure_every)` as ints, after checking that both are positive and that every
    measurement follows the same number of sweeps (shared by the lattice kernels' run functions)."""
    n_sweeps, measure_every = int(n_sweeps), int(measure_every)
    if n_sweeps < 1 or measure_every < 1:
        raise HeatbathError(f"n_sweeps and measure_every must be positive; got {n_sweeps} and {measure_every}.")
    if n_sweeps % measure_every:
        raise HeatbathError(
            f"n_sweeps ({n_sweeps}) must be a multiple of measure_every ({measure_every}) so that every "
            "measurement follows the same number of sweeps."
        )
    return n_sweeps, measure_every


def _check_finite(beta, J, h) -> None:
    """Raise on NaN or infinite parameters (when they are concrete), which would silently give garbage."""
    for name, value in (("beta", beta), ("J", J), ("h", h)):
        check_finite(value, f"Lattice {name}")


def _use_packed(L: int, method: str) -> bool:
    """Whether to run the multispin (one bit per spin) kernel: `method="auto"` picks it when L % 64 == 0."""
    if method not in _METHODS:
        raise HeatbathError(f"method must be one of {_METHODS}; got {method!r}.")
    if method == "packed":
        from heatbath.kernels.multispin import check_packable

        check_packable(L)
        return True
    return method == "auto" and L % 64 == 0


def _site_sum(x: Array) -> Float[Array, " chains"]:
    """Sum over all axes but the last (chains), of small integers, in float32 (exact below 2**24).

    XLA:CPU's reduction over major axes does not vectorise along the minor one; adding halves as
    whole rows of chains does, about 3x faster (measured).
    """
    x = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
    leftovers = []
    while x.shape[0] > 8:
        half = x.shape[0] // 2
        if x.shape[0] % 2:
            leftovers.append(x[-1])
        x = x[:half] + x[half : 2 * half]
    return sum(leftovers, jnp.sum(x, axis=0))


def _observables(quads: _Quads, J, h) -> tuple[Float[Array, " chains"], Float[Array, " chains"]]:
    n_sites = 4 * quads[0][0].shape[0] * quads[0][0].shape[1]
    # Every bond has exactly one endpoint of colour 0, so summing s_i * (neighbour sum) over that colour
    # counts each bond once. Elementwise int8 sums (|values| <= 8) first: two reductions, not six.
    bonds = _site_sum(sum(quads[a][b] * _neighbour_sum(quads, a, b) for a, b in _COLOURS[0]))
    total = _site_sum(quads[0][0] + quads[0][1] + quads[1][0] + quads[1][1])
    return -(J * bonds + h * total) / n_sites, total / n_sites


@jax.jit
def energy_per_site(
    spins: Int8[Array, "L L chains"], J: ArrayLike = 1.0, h: ArrayLike = 0.0
) -> Float[Array, " chains"]:
    """$E/L^2$ per chain."""
    _check_spins(spins)
    return _observables(_split(spins), jnp.asarray(J, jnp.float32), jnp.asarray(h, jnp.float32))[0]


@jax.jit
def magnetization_per_site(spins: Int8[Array, "L L chains"]) -> Float[Array, " chains"]:
    """$\\sum_i s_i / L^2$ per chain."""
    return _site_sum(spins) / (spins.shape[0] * spins.shape[1])


def _run_lattice(key, spins, beta, J, h, *, n_sweeps, measure_every):
    beta, J, h = float32_parameters(beta, J, h)
    tables = heat_bath_thresholds(beta, J, h)
    words = key_words(key)

    n_chains = spins.shape[2]

    # The next sweep's seeds travel in the loop carry, so they are materialised: computed inside the
    # sweep, XLA would fuse the cipher into the per-site loop and recompute it for every site.
    def measured_block(carry, block):
        def one_sweep(t, carry):
            quads, seeds = carry
            index = (block * measure_every + t + 1).astype(jnp.uint32)
            return _sweep_quads(seeds, quads, tables), _chain_seeds(words, index, n_chains)

        carry = jax.lax.fori_loop(0, measure_every, one_sweep, carry)
        return carry, _observables(carry[0], J, h)

    start = (_split(spins), _chain_seeds(words, 0, n_chains))
    (quads, _), (energy, magnetization) = jax.lax.scan(measured_block, start, jnp.arange(n_sweeps // measure_every))
    return _join(quads), energy, magnetization


_STATIC = ("n_sweeps", "measure_every")
_run_lattice_jit = jax.jit(_run_lattice, static_argnames=_STATIC)
# XLA:CPU targets 256-bit vectors by default; on AVX-512 CPUs 512-bit vectors made the former per-site cipher
# about 1.4x and a whole sweep about 1.3x faster (measured). Other backends ignore the option; a JAX or XLA
# that does not know it falls back to the default.
try:
    _run_lattice_wide = jax.jit(
        _run_lattice, static_argnames=_STATIC, compiler_options={"xla_cpu_prefer_vector_width": "512"}
    )
except TypeError:
    _run_lattice_wide = None


def _compiled_run_lattice(*args, **static):
    global _run_lattice_wide
    # Compiler options only apply to a top-level jit: inside a user's jit the plain version inlines.
    nested = any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(args))
    if _run_lattice_wide is not None and not nested:
        try:
            return _run_lattice_wide(*args, **static)
        except Exception as err:
            if "compile option" in str(err):  # an XLA that does not know the option
                _run_lattice_wide = None
            elif "compiler_options" not in str(err):  # (a nested jit closing over constants)
                raise
    return _run_lattice_jit(*args, **static)


def run_lattice(
    key: Key[Array, ""],
    state: LatticeIsingState,
    beta: ArrayLike,
    n_sweeps: int,
    *,
    J: ArrayLike = 1.0,
    h: ArrayLike = 0.0,
    measure_every: int = 1,
    method: str = "auto",
    devices=None,
) -> tuple[LatticeIsingState, Measurements]:
    """Run `n_sweeps` sweeps, measuring energy and magnetisation per site after every `measure_every`-th.

    Sweep `t` (from 0) equals `sweep(key, ..., index=t)`: the random words are counter-based, so no
    key is derived inside the loop. Compiled once per (lattice shape, n_sweeps, measure_every);
    `beta`, `J` and `h` are traced, so changing them does not recompile. To run in chunks, call it
    repeatedly with a fresh key per call (e.g. `jax.random.fold_in(key, chunk)`).

    `method` picks the kernel: "packed" is the multispin kernel (`heatbath.kernels.multispin`, one bit
    per spin, a Pallas kernel on CUDA GPUs), which needs L to be a multiple of 64; "bytes" is this
    module's int8 kernel, for any even L; "auto" (the default) takes "packed" whenever L allows it.
    Both sample the same distribution, from different random words.

    The packed kernel splits the chains over `devices` (default: every device of the default backend
    when their number divides the chains, else one device); the samples do not depend on the split.
    The int8 kernel runs on the default device.
    """
    _check_spins(state.spins)
    n_sweeps, measure_every = check_run_length(n_sweeps, measure_every)
    _check_finite(beta, J, h)  # as given; converted inside the compiled run (see `float32_parameters`)
    if _use_packed(state.spins.shape[0], method):
        from heatbath.kernels.multispin_run import lattice_devices, run_packed
        from heatbath.kernels.pallas_backend import resolve_backend

        run_on = lattice_devices(state.spins.shape[2], devices)
        spins, energy, magnetization = run_packed(
            state.spins, key, beta, J, h,
            n_sweeps=n_sweeps, measure_every=measure_every, backend=resolve_backend("auto", run_on), devices=run_on,
        )
        return LatticeIsingState(spins), Measurements(energy, magnetization)
    spins, energy, magnetization = _compiled_run_lattice(
        key, state.spins, beta, J, h, n_sweeps=n_sweeps, measure_every=measure_every
    )
    return LatticeIsingState(spins), Measurements(energy, magnetization)
