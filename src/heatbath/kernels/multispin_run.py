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
import numpy as np
from jax.sharding import Mesh, PartitionSpec
from jaxtyping import Array, ArrayLike, Float, Int8, Key, UInt32

from heatbath.errors import HeatbathError
from heatbath.kernels.checkerboard import float32_parameters, heat_bath_thresholds
from heatbath.kernels.counter_rng import iota_hashes
from heatbath.kernels.counter_rng import key_words as cipher_key_words
from heatbath.kernels.pallas_backend import sweeps_per_step
from heatbath.kernels.multispin import (
    PLANES,
    check_packable,
    pack_spins,
    packed_observables,
    packed_update,
    sweep_parameters,
    unpack_spins,
)

__all__ = ["packed_sweep", "run_packed", "lattice_devices", "group_size", "MAX_GROUP"]

_Words = tuple[UInt32[Array, "chains L W"], UInt32[Array, "chains L W"]]
MAX_GROUP = 1024  # sweeps whose parameters are computed together, at most


def _update(other, colour: int, first_word, params, t, backend: str):
    if backend == "jnp":
        hashes = iota_hashes(first_word, other.shape)
        return packed_update(other, colour, hashes, params[t, colour], planes=PLANES)
    from heatbath.kernels.multispin_pallas import pallas_packed_update

    return pallas_packed_update(
        other, colour, params, t, first_word=first_word, planes=PLANES, interpret=backend == "interpret"
    )


def packed_sweep(words: _Words, params, t, first_word, backend: str) -> _Words:
    """Sweep `t` of a parameter table from `sweep_parameters`: colour 0 from colour 1, then colour 1.
    `first_word` is the global index of the words' first word (nonzero on all but the first device)."""
    even = _update(words[1], 0, first_word, params, t, backend)
    return even, _update(even, 1, first_word, params, t, backend)


def group_size(n_sweeps: int, limit: int = MAX_GROUP) -> int:
    """Sweeps whose parameters are computed together: the largest divisor of `n_sweeps` up to `limit`
    (a table of 1,024 sweeps is 0.6 MB)."""
    return max(g for g in range(1, min(n_sweeps, max(1, limit)) + 1) if n_sweeps % g == 0)


def _split_colours(spins) -> _Words:
    words = pack_spins(spins)
    return words[:, 0], words[:, 1]


def _join_colours(words: _Words) -> Int8[Array, "L L chains"]:
    return unpack_spins(jnp.stack(words, axis=1))


@partial(jax.jit, static_argnames=("backend",))
def sweep_packed(spins, key: Key[Array, ""], index, beta, J, h, *, backend: str) -> Int8[Array, "L L chains"]:
    """One sweep of an int8 lattice through the packed update (`checkerboard.sweep` with method='packed');
    the key's words and the tables are computed in here, as in `run_packed`."""
    tables = heat_bath_thresholds(*float32_parameters(beta, J, h))
    params = sweep_parameters(tables, cipher_key_words(key), index, 1, PLANES)
    return _join_colours(packed_sweep(_split_colours(spins), params, jnp.int32(0), jnp.int32(0), backend))


def _run_local(words: _Words, first_word, key_words, tables, J, h, n_sweeps: int, measure_every: int, backend: str):
    group = group_size(measure_every)

    def measured_block(words, block):
        def sweep_group(g, words):
            params = sweep_parameters(tables, key_words, block * measure_every + g * group, group, PLANES)
            sweep = lambda t, w: packed_sweep(w, params, t, first_word, backend)  # noqa: E731
            return jax.lax.fori_loop(0, group, sweep, words, unroll=sweeps_per_step(backend, group))

        words = jax.lax.fori_loop(0, measure_every // group, sweep_group, words)
        return words, packed_observables(words, J, h)

    words, (energy, magnetization) = jax.lax.scan(measured_block, words, jnp.arange(n_sweeps // measure_every))
    return words, energy, magnetization


@partial(jax.jit, static_argnames=("n_sweeps", "measure_every", "backend", "devices"))
def run_packed(
    spins: Int8[Array, "L L chains"],
    key: Key[Array, ""],
    beta: ArrayLike,
    J: ArrayLike,
    h: ArrayLike,
    *,
    n_sweeps: int,
    measure_every: int,
    backend: str,
    devices: tuple = (),
) -> tuple[Int8[Array, "L L chains"], Float[Array, "measurements chains"], Float[Array, "measurements chains"]]:
    """`n_sweeps` packed sweeps (numbered 0, 1, ...) at inverse temperature `beta`, measuring after
    every `measure_every`-th. The key's words and the threshold tables are computed in here, so that
    a call is one dispatch (`checkerboard.float32_parameters` says why).

    With several `devices` (their number must divide the chains) each device runs its share of the
    chains; words are numbered globally, so the samples are the same for any number of devices."""
    L, _, n_chains = spins.shape
    check_packable(L)
    if n_chains * L * L // 64 >= 2**31:
        raise HeatbathError(
            f"{n_chains} chains of {L}x{L} are more than 2**31 packed words; run fewer chains per call."
        )
    words = _split_colours(spins)
    beta, J, h = float32_parameters(beta, J, h)
    tables = heat_bath_thresholds(beta, J, h)
    run = partial(_run_local, key_words=cipher_key_words(key), tables=tables, J=J, h=h, n_sweeps=n_sweeps,
                  measure_every=measure_every, backend=backend)  # fmt: skip
    if len(devices) <= 1:
        words, energy, magnetization = run(words, jnp.int32(0))
    else:
        local_words = (n_chains // len(devices)) * L * (L // 64)

        def shard(words):
            return run(words, jax.lax.axis_index("chains") * local_words)

        mesh = Mesh(np.asarray(devices), ("chains",))
        chains, by_chain = PartitionSpec("chains"), PartitionSpec(None, "chains")
        words, energy, magnetization = jax.shard_map(
            shard, mesh=mesh, in_specs=((chains, chains),), out_specs=((chains, chains), by_chain, by_chain),
            check_vma=False,
        )(words)
    return _join_colours(words), energy, magnetization


def lattice_devices(n_chains: int, devices=None) -> tuple:
    """The devices a packed run splits its chains over: `devices` (their number must divide the chains),
    or by default every device of the default backend when their number divides the chains, else one."""
    if devices is not None:
        devices = tuple(devices)
        if not devices or n_chains % len(devices):
            raise HeatbathError(
                f"The lattice kernel splits whole chains over devices: {n_chains} chains cannot be split evenly "
                f"over {len(devices)} devices. Pass a number of chains divisible by the device count."
            )
        return devices
    everywhere = tuple(jax.devices())
    return everywhere if n_chains % len(everywhere) == 0 else everywhere[:1]
