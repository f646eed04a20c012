r"""Multispin-coded heat-bath sampler for the periodic 2D Ising lattice: one bit per spin.

The model and the update are those of `heatbath.kernels.checkerboard` (an $L \times L$ torus, two
checkerboard colours, each spin drawn from $P(s_i = +1) = \sigma(2\beta(J \sum_{j \sim i} s_j + h))$);
only the representation and the arithmetic differ, and the sampled distribution is the same.

Packing. Each colour of a row holds $M = L/2$ sites, indexed $m$ (site column $2m + ((i + c) \bmod 2)$
for colour $c$ in row $i$). They are packed into $W = M/32$ uint32 words with a stride: bit (lane) $b$
of word $w$ holds site $m = bW + w$. A site's four neighbours are then whole words of the other colour:
the same word of rows $i \pm 1$, the same word of row $i$, and word $w \mp 1$ of row $i$ (for the
word at the row's end, the word at its other end with its lanes rotated by one). So 32 sites are
updated with a handful of bitwise operations, which needs $L$ to be a multiple of 64.

Neighbour count. The number $c \in \{0, \dots, 4\}$ of +1 neighbours of each lane comes from a
bit-sliced adder of the four neighbour words, as five disjoint lane masks (one per count).

Bernoulli draws without per-spin arithmetic. Heat-bath takes the less likely value when a uniform
32-bit $u$ falls below a threshold $t_c$ that depends on the lane's count only (five values per
update; those of the checkerboard kernel, so tiny probabilities keep float32's relative precision).
Compare $u$ and $t_c$ bit by bit from the most significant: the first differing bit decides. The
first `PLANES` (8) bits of $u$ come from one random *word* per bit position ("plane"), which gives
that bit to all 32 lanes at once; a lane is decided at each plane with probability 1/2, so after 8
planes all but 1/256 of the lanes are. A lane whose 8 bits all tie with $t_c$'s takes the remaining
24 bits of $u$ from the top of a fresh random word and compares them with $t_c$'s remaining bits; a
word's tied lanes do this one at a time, lowest lane first, which a loop over the (rarely more than
two) tied lanes per word finishes. The outcome is exactly `u < t_c` for a uniform 32-bit $u$, at about
8 random words per 32 spins instead of 32.

Random words. Update $n$ (colour $c$ of sweep $t$ is update $2t + c$) has 64 keys,
`mix32((64 n + i) ^ w0) ^ w1` from the run's two key words: a bijection of the counter, so no two
keys of a run coincide. Keys 0-7 serve the planes, key 8 + j the j-th tied lane of every word. Word
$g$ (flat index over chains, rows and words) gets `mix32(g·golden ^ key)`, so the result depends on
the key and the global word index only, not on how the work is split.

The same arithmetic runs as a jax.numpy function on any backend and, on CUDA GPUs, as a Pallas
(Triton) kernel (`heatbath.kernels.multispin_pallas`) that decides each block of words in registers;
both give identical bits.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int8, UInt32

from heatbath.errors import HeatbathError
from heatbath.kernels.checkerboard_layout import (
    colour_sites,
    join_colours,
    side_is_previous,
)
from heatbath.kernels.counter_rng import mix32, weyl_hashes

__all__ = [
    "LANES",
    "PLANES",
    "N_PARAMS",
    "rotate_lanes_up",
    "rotate_lanes_down",
    "any_set",
    "chain_hashes",
    "check_packable",
    "pack_spins",
    "unpack_spins",
    "count_bits",
    "count_classes",
    "update_parameters",
    "sweep_parameters",
    "ParameterRow",
    "decide_lanes",
    "packed_update",
    "packed_observables",
]

LANES = 32
PLANES = 8  # bits of every uniform compared plane by plane (the rest lane by lane, for the few ties)


def check_packable(L: int) -> None:
    """Raise unless an L × L lattice can be multispin-coded (each colour row a whole number of words)."""
    if L % (2 * LANES):
        raise HeatbathError(
            f"The multispin lattice kernel packs each colour's row of L/2 sites into 32-bit words, so L must be "
            f"a multiple of 64; got L={L}. Use method='bytes' (one int8 per spin) for other sizes."
        )


# ---------------------------------------------------------------------------------------------------
# Packing: int8 spins [L, L, chains] <-> words [chains, 2, L, W], bit b of word w = site m = b·W + w.


def pack_spins(spins: Int8[Array, "L L chains"]) -> UInt32[Array, "chains 2 L W"]:
    """Pack ±1 spins into one bit per spin (1 = +1) in the strided multispin layout."""
    L, _, n_chains = spins.shape
    check_packable(L)
    W = L // (2 * LANES)
    lanes = jnp.arange(LANES, dtype=jnp.uint32)[None, :, None, None]
    words = []
    for colour in (0, 1):
        up = (colour_sites(spins, colour) > 0).reshape(L, LANES, W, n_chains).astype(jnp.uint32)
        words.append(jnp.sum(up << lanes, axis=1, dtype=jnp.uint32))  # disjoint bits: the sum is the OR
    return jnp.moveaxis(jnp.stack(words), -1, 0)


def unpack_spins(words: UInt32[Array, "chains 2 L W"]) -> Int8[Array, "L L chains"]:
    """The int8 ±1 lattice `[L, L, chains]` of packed words (inverse of `pack_spins`)."""
    n_chains, _, L, W = words.shape
    lanes = jnp.arange(LANES, dtype=jnp.uint32)[None, :, None, None]
    sites = []
    for colour in (0, 1):
        bits = (jnp.moveaxis(words[:, colour], 0, -1)[:, None] >> lanes) & 1  # [L, lanes, W, chains]
        sites.append(jnp.where(bits.reshape(L, L // 2, n_chains) == 1, jnp.int8(1), jnp.int8(-1)))
    return join_colours(tuple(sites))


# ---------------------------------------------------------------------------------------------------
# Bit-sliced arithmetic shared by the jax.numpy sweep and the Pallas kernel.


def rotate_lanes_up(x: UInt32[Array, "*n"]) -> UInt32[Array, "*n"]:
    """Lane b takes lane b-1 (lane 0 takes lane 31): the word holding sites m-1 of a word's sites."""
    return (x << jnp.uint32(1)) | (x >> jnp.uint32(LANES - 1))


def rotate_lanes_down(x: UInt32[Array, "*n"]) -> UInt32[Array, "*n"]:
    """Lane b takes lane b+1 (lane 31 takes lane 0): the word holding sites m+1 of a word's sites."""
    return (x >> jnp.uint32(1)) | (x << jnp.uint32(LANES - 1))


def count_bits(n1, n2, n3, n4) -> tuple[UInt32[Array, "*n"], UInt32[Array, "*n"], UInt32[Array, "*n"]]:
    """Per lane, the number c = b0 + 2·b1 + 4·b2 (0..4) of set bits among four words, as planes (b0, b1, b2)."""
    s0, c0 = n1 ^ n2, n1 & n2
    s1, c1 = n3 ^ n4, n3 & n4
    # c0 + c1 + (s0 & s1) <= 2, and four set bits (c0 = c1 = 1) leave s0 = s1 = 0: b2 = 1 forces b0 = b1 = 0.
    return s0 ^ s1, c0 ^ c1 ^ (s0 & s1), c0 & c1


def count_classes(bits) -> tuple[UInt32[Array, "*n"], ...]:
    """Five disjoint lane masks from `count_bits`: mask c has the lanes whose count is c."""
    b0, b1, b2 = bits
    return ~(b0 | b1 | b2), b0 & ~b1, b1 & ~b0, b0 & b1, b2


def _select5(classes, flags):
    """Per lane, flag `flags[c]` (five 0/1 scalars) of the lane's class c, as one word.

    The classes are disjoint, so the OR of `classes[c] & -flags[c]` is a sum of products; written as
    integer multiply-adds it runs on a GPU's multiply-add units, not on its (half-rate) logic units,
    which the random words already keep busy."""
    out = classes[0] * flags[0]
    for c in range(1, 5):
        out = out + classes[c] * flags[c]
    return out


# One colour update's parameters, a uint32 vector shared by the jax.numpy update and the kernel.
P_THRESHOLD = 0  # t_c, c = 0..4: P(the less likely value) * 2**32
P_LIKELIER = 5  # 1 where the likelier value is +1
P_TAIL = 10  # t_c mod 2**(32 - planes): the threshold bits below the planes
P_KEYS = 15  # 64 random keys: the planes first, then the lane-by-lane draws
KEYS_PER_UPDATE = 64
N_PARAMS = P_KEYS + KEYS_PER_UPDATE


def update_parameters(tables, key_words, update, planes: int) -> UInt32[Array, "79"]:
    """The parameter vector of update number `update` from the checkerboard kernel's `(plus_likelier,
    threshold)` tables and the run's two key words. Keys are `mix32((64·update + i) ^ w0) ^ w1`: a
    bijection of the counter, so no two keys of a run coincide."""
    plus_likelier, threshold = tables
    counter = jnp.asarray(update, jnp.uint32) * jnp.uint32(KEYS_PER_UPDATE) + jnp.arange(KEYS_PER_UPDATE, dtype=jnp.uint32)
    keys = mix32(counter ^ key_words[0]) ^ key_words[1]
    tail = threshold & jnp.uint32((1 << (32 - planes)) - 1)
    return jnp.concatenate([threshold, plus_likelier.astype(jnp.uint32), tail, keys])


def sweep_parameters(tables, key_words, first_sweep, n_sweeps: int, planes: int) -> UInt32[Array, "n 2 79"]:
    """`update_parameters` of both colours of `n_sweeps` sweeps from `first_sweep`: row [t, c] is
    update 2·(first_sweep + t) + c. Computed once for a group of sweeps, outside the sweep loop, so
    that a GPU sweep is two kernel launches and no small parameter kernels."""
    sweeps = jnp.asarray(first_sweep, jnp.uint32) + jnp.arange(n_sweeps, dtype=jnp.uint32)
    updates = 2 * sweeps[:, None] + jnp.arange(2, dtype=jnp.uint32)[None, :]
    return jax.vmap(jax.vmap(lambda u: update_parameters(tables, key_words, u, planes)))(updates)


class ParameterRow:
    """Entries `params[offset + i]` of a flat parameter table (an array or a kernel's reference), read
    as `row[i]`: one update's vector inside a table of many, without slicing it out first."""

    def __init__(self, table, offset):
        self.table, self.offset = table, offset

    def __getitem__(self, i):
        return self.table[self.offset + i]


def decide_lanes(
    bits,
    hashes: UInt32[Array, "*n"],
    params,
    *,
    planes: int,
    any_set: Callable[[Array], Array],
) -> UInt32[Array, "*n"]:
    """New words of the updated colour: per lane, +1 (bit set) with the heat-bath probability of its count.

    `bits` are the count planes of `count_bits`; `params` the vector of `update_parameters` (an array,
    or a kernel's reference to one); `any_set` reduces a mask over the array (or block) that shares the
    lane-by-lane loop. Each lane's uniform u is compared with its threshold t as in the module
    docstring: the first `planes` bits of u plane by plane, for all lanes at once; the few lanes whose
    bits all tie with t's then draw their remaining 32 - planes bits one lane per word at a time.
    """
    classes = count_classes(bits)
    decided = below = jnp.zeros_like(hashes)
    for k in range(planes):
        t_bit = _select5(classes, tuple((params[P_THRESHOLD + c] >> jnp.uint32(31 - k)) & jnp.uint32(1) for c in range(5)))
        u_bit = mix32(hashes ^ params[P_KEYS + k])
        now = (u_bit ^ t_bit) & ~decided
        decided, below = decided | now, below | (now & t_bit)

    def lanes_left(carry):
        return any_set(carry[1])

    def next_lane(carry):
        j, open_lanes, below = carry
        lowest = open_lanes & (jnp.uint32(0) - open_lanes)  # one undecided lane per word
        count = sum(jnp.where((b & lowest) != 0, 1 << i, 0) for i, b in enumerate(bits))
        u_tail = mix32(hashes ^ params[P_KEYS + planes + j]) >> jnp.uint32(planes)
        below = below | jnp.where(u_tail < params[P_TAIL + count], lowest, jnp.uint32(0))
        return j + 1, open_lanes ^ lowest, below

    _, _, below = jax.lax.while_loop(lanes_left, next_lane, (jnp.int32(0), ~decided, below))
    return below ^ _select5(classes, tuple(params[P_LIKELIER + c] for c in range(5)))


def chain_hashes(seeds: UInt32[Array, " chains"], shape: tuple[int, int]) -> UInt32[Array, "chains L W"]:
    """Per-chain hashes of a colour's words `[chains, L, W]`: golden · (word index inside its chain)
    XOR the chain's seed, so `mix32(hash ^ key)` is the pairwise kernels' `mix32(golden·id ^ seed)`
    word and a chain's bits depend on its own seed only (the THRML-style torus route, `torus_run`)."""
    local = jax.lax.iota(jnp.uint32, shape[0] * shape[1]).reshape(shape)
    return weyl_hashes(local)[None] ^ seeds[:, None, None]


def any_set(x: UInt32[Array, "*n"]) -> Bool[Array, ""]:
    """True while some word of `x` is nonzero."""
    return jnp.sum((x != jnp.uint32(0)).astype(jnp.int32)) > 0


# ---------------------------------------------------------------------------------------------------
# The colour update as jax.numpy (any backend).


def _neighbour_words(other: UInt32[Array, "chains L W"], colour: int):
    """The four neighbour words of every word of colour `colour`, from the other colour's words."""
    L = other.shape[1]
    up, down = jnp.roll(other, 1, axis=1), jnp.roll(other, -1, axis=1)
    previous = jnp.concatenate([rotate_lanes_up(other[..., -1:]), other[..., :-1]], axis=-1)  # sites m-1
    following = jnp.concatenate([other[..., 1:], rotate_lanes_down(other[..., :1])], axis=-1)  # sites m+1
    to_previous = side_is_previous(np.arange(L), colour)[None, :, None]
    return up, down, other, jnp.where(to_previous, previous, following)


def packed_update(
    other: UInt32[Array, "chains L W"], colour: int, hashes, params, *, planes: int = PLANES
) -> UInt32[Array, "chains L W"]:
    """New words of colour `colour` given the other colour's words (jax.numpy; `hashes` from
    `counter_rng.iota_hashes`, `params` from `update_parameters` with the same `planes`)."""
    bits = count_bits(*_neighbour_words(other, colour))
    return decide_lanes(bits, hashes, params, planes=planes, any_set=any_set)


# ---------------------------------------------------------------------------------------------------
# Observables from popcounts.


def packed_observables(
    words: tuple[UInt32[Array, "chains L W"], UInt32[Array, "chains L W"]], J, h
) -> tuple[Float[Array, " chains"], Float[Array, " chains"]]:
    """(E / L², Σ s / L²) per chain. Every bond has one endpoint of colour 0, so summing each colour-0
    spin times its neighbours counts every bond once: per neighbour word, agreements minus disagreements."""
    even, odd = words
    n_chains, L, W = even.shape
    n_sites = L * L

    def count(x):
        return jnp.sum(jax.lax.population_count(x).astype(jnp.int32), axis=(1, 2))

    agree = sum(count(~(even ^ n)) for n in _neighbour_words(odd, 0))
    bonds = 2 * agree - 4 * n_sites // 2
    total = 2 * (count(even) + count(odd)) - n_sites
    bonds, total = bonds.astype(jnp.float32), total.astype(jnp.float32)
    return -(J * bonds + h * total) / n_sites, total / n_sites
