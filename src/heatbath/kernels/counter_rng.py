"""Counter-based random bits for kernels: Threefry-2x32-20 written as plain uint32 array arithmetic.

jax.random.bits with the default key is slow on XLA:CPU (about 16 ns per 32-bit word, measured),
which would make random numbers most of a sweep. The same Threefry-2x32-20 function (Salmon et al.,
SC 2011; JAX's default generator) written as uint32 array arithmetic fuses into one vectorised loop
instead, several times faster, and is bit-identical to JAX's reference function.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Key, UInt32

from heatbath.errors import HeatbathError

__all__ = ["GOLDEN", "KEY_PARITY", "MIX_MULTIPLIERS", "ROTATIONS", "STREAM_TAG", "threefry2x32", "key_words", "random_bits", "cipher_bits", "mix32", "fold16", "mix32_tail", "stream_seeds", "update_words", "uniform_from_words", "weyl_hashes", "iota_hashes"]

ROTATIONS = (13, 15, 26, 6, 17, 29, 16, 24)  # Threefry-2x32 rotation distances, cycled every 8 rounds
KEY_PARITY = 0x1BD11BDA
_ROUNDS = 20


def _rotate_left(x: Array, r: int) -> Array:
    return (x << jnp.uint32(r)) | (x >> jnp.uint32(32 - r))


def threefry2x32(
    key: tuple[ArrayLike, ArrayLike], x0: UInt32[Array, "*n"], x1: UInt32[Array, "*n"]
) -> tuple[UInt32[Array, "*n"], UInt32[Array, "*n"]]:
    """The Threefry-2x32-20 block cipher of the counter pairs `(x0, x1)` under `key` (two uint32 words)."""
    k0, k1 = (jnp.asarray(k, jnp.uint32) for k in key)
    schedule = (k0, k1, k0 ^ k1 ^ jnp.uint32(KEY_PARITY))
    x0, x1 = x0 + schedule[0], x1 + schedule[1]
    for r in range(_ROUNDS):
        x0 = x0 + x1
        x1 = _rotate_left(x1, ROTATIONS[r % 8]) ^ x0
        if r % 4 == 3:
            s = r // 4 + 1
            x0 = x0 + schedule[s % 3]
            x1 = x1 + schedule[(s + 1) % 3] + jnp.uint32(s)
    return x0, x1


def key_words(key: Key[Array, ""] | UInt32[Array, "2"]) -> tuple[UInt32[Array, ""], UInt32[Array, ""]]:
    """The two cipher key words derived from a JAX key (typed or raw, of any implementation)."""
    words = jax.random.bits(key, (2,), jnp.uint32)
    return words[0], words[1]


def cipher_bits(words, shape: tuple[int, ...], stream) -> UInt32[Array, "*shape"]:
    """Words for counters `(i, stream)` under already-derived key `words` (see `random_bits`)."""
    if not shape or shape[0] % 2:
        raise HeatbathError(f"random_bits needs an even leading dimension; got shape {shape}.")
    half = (shape[0] // 2, *shape[1:])
    n = int(np.prod(half))
    if n >= 2**32:
        raise HeatbathError(f"random_bits draws at most 2**33 words per call; shape {shape} asks for {2 * n}.")
    counters = jax.lax.iota(jnp.uint32, n).reshape(half)
    a, b = threefry2x32(words, counters, jnp.full(half, stream, jnp.uint32))
    return jnp.concatenate([a, b], axis=0)


def random_bits(
    key: Key[Array, ""] | UInt32[Array, "2"], shape: tuple[int, ...], *, stream: ArrayLike = 0
) -> UInt32[Array, "*shape"]:
    """Independent uniform 32-bit words of the given shape (`shape[0]` even), keyed by any JAX key.

    Words are cipher outputs of the counters `(i, stream)`: each `stream` (a uint32, may be traced) is
    an independent draw under the same key. One cipher call yields two words, so the two halves of
    axis 0 are the two outputs of one counter.
    """
    return cipher_bits(key_words(key), tuple(shape), stream)


GOLDEN = 0x9E3779B9  # odd, so multiplying a node id by it is a bijection of uint32
STREAM_TAG = 0x5EED5EED
MIX_MULTIPLIERS = (0x7FEB352D, 0x846CA68B)  # mix32's two odd multipliers


def mix32(x: UInt32[Array, "*n"]) -> UInt32[Array, "*n"]:
    """A bijective 32-bit avalanche mix (xor-shift-multiply, the 'lowbias32' constants): every input
    bit flips each output bit with probability close to 1/2."""
    return mix32_tail(fold16(x))


def fold16(x: UInt32[Array, "*n"]) -> UInt32[Array, "*n"]:
    """x ^ (x >> 16), mix32's first step. It distributes over xor, so mix32(a ^ b) is
    mix32_tail(fold16(a) ^ fold16(b)): kernels fold a node's hash and a chain's seed once each.
    Numpy in, numpy out (host tables built while tracing); jax in, jax out."""
    return x ^ (x >> 16)


def mix32_tail(x: UInt32[Array, "*n"]) -> UInt32[Array, "*n"]:
    """mix32 after its first step (see `fold16`)."""
    x = x * jnp.uint32(MIX_MULTIPLIERS[0])
    x = x ^ (x >> jnp.uint32(15))
    x = x * jnp.uint32(MIX_MULTIPLIERS[1])
    return x ^ (x >> jnp.uint32(16))


def stream_seeds(chain_words: UInt32[Array, "chains 2"], stream) -> UInt32[Array, " chains"]:
    """One seed word per chain for one stream (one block update of one sweep): Threefry-2x32-20 of
    the counter pair `(stream, tag)` under each chain's own key, so streams never repeat and a chain's
    words depend on its key alone, not on which other chains run beside it or on which device."""
    k0, k1 = chain_words[:, 0], chain_words[:, 1]
    s = jnp.broadcast_to(jnp.asarray(stream, jnp.uint32), k0.shape)
    return threefry2x32((k0, k1), s, jnp.full_like(s, STREAM_TAG))[0]


def weyl_hashes(index: Array) -> UInt32[Array, "*n"]:
    """golden · index (mod 2**32) for integer indices: a bijection that spreads consecutive indices
    over the whole word, the per-element half of a `mix32(golden·index ^ key)` random word."""
    return index.astype(jnp.uint32) * jnp.uint32(GOLDEN)


def iota_hashes(first, shape: tuple[int, ...]) -> UInt32[Array, "*shape"]:
    """`weyl_hashes` of the flat indices first, first + 1, ... of an array of `shape`."""
    index = jax.lax.iota(jnp.uint32, int(np.prod(shape))).reshape(shape) + jnp.asarray(first, jnp.uint32)
    return weyl_hashes(index)


def update_words(seed: UInt32[Array, " chains"], node_ids: UInt32[Array, " n"]) -> UInt32[Array, "n chains"]:
    """One word per (node, chain) for a stream: mix(golden·id ^ seed).

    For one chain this hashes a Weyl sequence offset by the chain's seed (the construction of
    SplitMix-style generators); the mix is a bijection, so distinct nodes of a chain never share a
    word, and each chain's seed is a fresh cipher output for every stream. About 8 integer operations
    per word instead of Threefry's ~60, which matters once the field is a few loads.
    """
    a = node_ids.astype(jnp.uint32)[:, None] * jnp.uint32(GOLDEN)
    return mix32(a ^ seed[None, :])


def uniform_from_words(bits: UInt32[Array, "*n"]) -> Array:
    """Uniform floats in (0, 1) from 32-bit words (24 random bits, never exactly 0 or 1)."""
    return ((bits >> jnp.uint32(8)).astype(jnp.float32) + 0.5) * jnp.float32(2.0**-24)


SIGNED_COUPLING_MODE = "xor"  # "xor", "select" or "multiply": how J·s is formed (benchmarked in bench/)


def signed_coupling(w: Array, s: Array) -> Array:
    """J·s for a float coupling J and an int8 spin s = ±1, without converting s to float.

    "xor" flips J's sign bit where s < 0 (an integer and + xor, full rate on GPUs, where an
    int-to-float conversion runs at a quarter of the float rate); "select" picks ±J; "multiply"
    converts s and multiplies. All three give the same float exactly.
    """
    if SIGNED_COUPLING_MODE == "multiply":
        return w * s.astype(jnp.float32)
    if SIGNED_COUPLING_MODE == "select":
        return jnp.where(s > 0, w, -w)
    sign = s.astype(jnp.int32) & jnp.int32(-(2**31))
    bits = jax.lax.bitcast_convert_type(w, jnp.int32)
    return jax.lax.bitcast_convert_type(bits ^ sign, jnp.float32)
