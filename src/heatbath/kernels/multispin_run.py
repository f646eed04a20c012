"""Sweeps and measured runs of the multispin lattice sampler (`heatbath.kernels.multispin`).

`run_lattice` and `sweep` in `heatbath.kernels.checkerboard` call these when the lattice side is a
multiple of 64 (`method="auto"` or `"packed"`). A run packs the int8 lattice once, keeps the two
colours as separate word arrays in the loop carry, and unpacks at the end; measurements come from
popcounts of the words. On a CUDA GPU each colour update is the Pallas kernel, elsewhere the
jax.numpy update; both give the same words.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int8, UInt32

from heatbath.errors import HeatbathError
from heatbath.kernels.multispin import (
    PLANES,
    check_packable,
    pack_spins,
    packed_observables,
    packed_update,
    site_hashes,
    sweep_parameters,
    unpack_spins,
)
from heatbath.kernels.pallas_spin import pallas_available

__all__ = ["packed_sweep", "run_packed", "resolve_backend"]

_Words = tuple[UInt32[Array, "chains L W"], UInt32[Array, "chains L W"]]
_BACKENDS = ("auto", "pallas", "jnp", "interpret")
_MAX_GROUP = 1024


def resolve_backend(backend: str) -> str:
    """'pallas' on a CUDA GPU with Pallas for `backend="auto"`, else 'jnp'; explicit choices are checked."""
    if backend not in _BACKENDS:
        raise HeatbathError(f"backend must be one of {_BACKENDS}; got {backend!r}.")
    if backend == "auto":
        return "pallas" if pallas_available() else "jnp"
    if backend == "pallas" and not pallas_available():
        raise HeatbathError("backend='pallas' needs a CUDA GPU with Pallas' Triton backend; use 'jnp' or 'auto'.")
    return backend


def _update(other, colour: int, hashes, params, t, backend: str):
    if backend == "jnp":
        return packed_update(other, colour, hashes, params[t, colour], planes=PLANES)
    from heatbath.kernels.multispin_pallas import pallas_packed_update

    return pallas_packed_update(other, colour, params, t, planes=PLANES, interpret=backend == "interpret")


def packed_sweep(words: _Words, params, t, hashes, backend: str) -> _Words:
    """Sweep `t` of a parameter table from `sweep_parameters`: colour 0 from colour 1, then colour 1."""
    even = _update(words[1], 0, hashes, params, t, backend)
    return even, _update(even, 1, hashes, params, t, backend)


def _group_size(measure_every: int) -> int:
    """Sweeps whose parameters are computed together: the largest divisor of `measure_every` up to
    1,024 (a table of 1,024 sweeps is 0.6 MB)."""
    return max(g for g in range(1, min(measure_every, _MAX_GROUP) + 1) if measure_every % g == 0)


def _split_colours(spins) -> _Words:
    words = pack_spins(spins)
    return words[:, 0], words[:, 1]


def _join_colours(words: _Words) -> Int8[Array, "L L chains"]:
    return unpack_spins(jnp.stack(words, axis=1))


@partial(jax.jit, static_argnames=("backend",))
def sweep_packed(spins, key_words, index, tables, *, backend: str) -> Int8[Array, "L L chains"]:
    """One sweep of an int8 lattice through the packed update (`checkerboard.sweep` with method='packed')."""
    words = _split_colours(spins)
    hashes = site_hashes(0, words[0].shape)
    params = sweep_parameters(tables, key_words, index, 1, PLANES)
    return _join_colours(packed_sweep(words, params, jnp.int32(0), hashes, backend))


@partial(jax.jit, static_argnames=("n_sweeps", "measure_every", "backend"))
def run_packed(
    spins: Int8[Array, "L L chains"], key_words, tables, J, h, *, n_sweeps: int, measure_every: int, backend: str
) -> tuple[Int8[Array, "L L chains"], Float[Array, "measurements chains"], Float[Array, "measurements chains"]]:
    """`n_sweeps` packed sweeps (numbered 0, 1, ...), measuring after every `measure_every`-th."""
    check_packable(spins.shape[0])
    words = _split_colours(spins)
    hashes = site_hashes(0, words[0].shape)

    group = _group_size(measure_every)

    def measured_block(words, block):
        def sweep_group(g, words):
            params = sweep_parameters(tables, key_words, (block * measure_every + g * group), group, PLANES)
            return jax.lax.fori_loop(0, group, lambda t, w: packed_sweep(w, params, t, hashes, backend), words)

        words = jax.lax.fori_loop(0, measure_every // group, sweep_group, words)
        return words, packed_observables(words, J, h)

    words, (energy, magnetization) = jax.lax.scan(measured_block, words, jnp.arange(n_sweeps // measure_every))
    return _join_colours(words), energy, magnetization
