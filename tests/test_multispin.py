"""The multispin (one bit per spin) lattice kernel: packing, its decision rule, and exact thermodynamics.

The exact reference is Kaufman's finite-lattice solution (`heatbath.exact.ising2d`), since the
kernel needs L to be a multiple of 64. Error bars: each chain's time average is one sample; chains
are independent, so the standard error over chains is honest whatever the autocorrelation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from heatbath.errors import HeatbathError
from heatbath.exact.ising2d import BETA_CRITICAL, exact_finite_lattice
from heatbath.kernels import energy_per_site, init_lattice, magnetization_per_site, run_lattice, sweep
from heatbath.kernels.checkerboard import heat_bath_thresholds
from heatbath.kernels.counter_rng import iota_hashes, key_words
from heatbath.kernels.multispin import (
    PLANES,
    pack_spins,
    packed_observables,
    packed_update,
    sweep_parameters,
    unpack_spins,
    update_parameters,
)
from heatbath.kernels.multispin_pallas import pallas_packed_update

Z_LIMIT = 4.0


def _np_mix32(x: np.ndarray) -> np.ndarray:
    """lowbias32, written independently of the library in numpy uint32 arithmetic."""
    x = x.astype(np.uint32)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x7FEB352D)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def test_pack_unpack_and_observables():
    spins = init_lattice(jax.random.key(0), 128, 3).spins
    words = pack_spins(spins)
    assert words.shape == (3, 2, 128, 2) and words.dtype == jnp.uint32
    np.testing.assert_array_equal(np.asarray(unpack_spins(words)), np.asarray(spins))
    energy, m = packed_observables((words[:, 0], words[:, 1]), 1.3, 0.4)
    np.testing.assert_allclose(np.asarray(energy), np.asarray(energy_per_site(spins, 1.3, 0.4)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(m), np.asarray(magnetization_per_site(spins)), rtol=1e-6)


@pytest.mark.parametrize("colour, planes", [(0, PLANES), (1, PLANES), (0, 2), (1, 31)])
def test_update_is_threshold_rule(colour, planes):
    """Every new spin is +1 exactly when likelier(c) XOR (u < t_c), c the site's number of +1 neighbours
    and u a uniform 32-bit number built as the module docstring says: its first `planes` bits are the
    site's lane bits of the plane words; where they tie with t_c's, the rest are the top bits of the
    word's next lane-by-lane draw (the word's tied lanes take draws in lane order)."""
    L, chains, update = 128, 2, 7
    spins = np.asarray(init_lattice(jax.random.key(1), L, chains).spins)
    words = pack_spins(jnp.asarray(spins))
    tables = heat_bath_thresholds(jnp.float32(0.44), jnp.float32(0.9), jnp.float32(0.15))
    kw = key_words(jax.random.key(3))
    other = words[:, 1 - colour]
    params = update_parameters(tables, kw, jnp.uint32(update), planes)
    new = packed_update(other, colour, iota_hashes(0, other.shape), params, planes=planes)
    new_spins = np.asarray(unpack_spins(jnp.stack([new, other] if colour == 0 else [other, new], axis=1)))

    W = L // 64
    w0, w1 = (np.uint32(int(x)) for x in kw)
    keys = _np_mix32((64 * update + np.arange(64, dtype=np.uint32)) ^ w0) ^ w1
    hashes = np.arange(chains * L * W, dtype=np.uint32).reshape(chains, L, W) * np.uint32(0x9E3779B9)
    lane_bits = np.arange(32, dtype=np.uint32)
    u_top = np.zeros((chains, L, W, 32), np.uint64)  # [chain, row, word, lane]
    for k in range(planes):
        u_top = 2 * u_top + ((_np_mix32(hashes ^ keys[k])[..., None] >> lane_bits) & 1)
    likelier, threshold = (np.asarray(x).astype(np.uint64) for x in tables)

    rows, m = np.meshgrid(np.arange(L), np.arange(L // 2), indexing="ij")
    cols = 2 * m + (rows + colour) % 2
    s = np.moveaxis(spins, -1, 0).astype(np.int64)  # [chain, L, L]
    neighbours = (
        s[:, (rows - 1) % L, cols] + s[:, (rows + 1) % L, cols] + s[:, rows, (cols - 1) % L] + s[:, rows, (cols + 1) % L]
    )
    count = (neighbours + 4) // 2  # [chain, row, m]
    lane, word = np.divmod(m, W)
    t = threshold[count]
    t_top, t_tail = t >> (32 - planes), t & ((1 << (32 - planes)) - 1)
    u_site = u_top[:, rows, word, lane]
    tie = u_site == t_top
    # Rank of each tied site among its word's tied lanes, in lane order.
    tie_by_lane = np.zeros((chains, L, W, 32), bool)
    tie_by_lane[:, rows, word, lane] = tie
    rank = (np.cumsum(tie_by_lane, axis=-1) - 1)[:, rows, word, lane]
    draws = _np_mix32(hashes[:, rows, word] ^ keys[np.clip(planes + rank, 0, 63)])
    u_tail = (draws >> np.uint32(planes)).astype(np.uint64)
    below = (u_site < t_top) | (tie & (u_tail < t_tail))
    expected_up = likelier[count].astype(bool) ^ below
    got_up = np.moveaxis(new_spins, -1, 0)[:, rows, cols] == 1
    np.testing.assert_array_equal(got_up, expected_up)
    assert planes > 16 or tie.sum() > 50  # the lane-by-lane draws were exercised
    # The other colour is untouched.
    other_cols = 2 * m + (rows + 1 - colour) % 2
    np.testing.assert_array_equal(np.moveaxis(new_spins, -1, 0)[:, rows, other_cols], s[:, rows, other_cols])


@pytest.mark.parametrize("L, chains, block", [(64, 1, 16), (128, 3, 64), (192, 2, 32)])
def test_pallas_kernel_equals_jnp_update(L, chains, block):
    """The Pallas kernel (interpreted on CPU; natively on GPU in the device run) gives identical words."""
    words = pack_spins(init_lattice(jax.random.key(L), L, chains).spins)
    tables = heat_bath_thresholds(jnp.float32(BETA_CRITICAL), jnp.float32(1.0), jnp.float32(0.0))
    kw = key_words(jax.random.key(4))
    for colour, planes in ((0, PLANES), (1, 3)):
        table = sweep_parameters(tables, kw, 5, 3, planes)  # sweeps 5, 6, 7; the kernel reads row [1, colour]
        np.testing.assert_array_equal(np.asarray(table[1, colour]), np.asarray(update_parameters(tables, kw, 12 + colour, planes)))
        other, first = words[:, 1 - colour], 1000 * colour  # as on the second of several devices
        expected = packed_update(other, colour, iota_hashes(first, other.shape), table[1, colour], planes=planes)
        got = pallas_packed_update(
            other, colour, table, jnp.int32(1), first_word=first, planes=planes, block=block, interpret=True
        )
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def test_run_lattice_equals_indexed_sweeps_packed():
    key, state = jax.random.key(11), init_lattice(jax.random.key(1), 64, 5)
    final, trace = run_lattice(key, state, 0.4, 6, J=0.8, h=-0.2, measure_every=2, method="packed")
    manual, energies = state, []
    for t in range(6):
        manual = sweep(key, manual, 0.4, 0.8, -0.2, index=t, method="packed")
        if t % 2 == 1:
            energies.append(energy_per_site(manual.spins, 0.8, -0.2))
    np.testing.assert_array_equal(np.asarray(final.spins), np.asarray(manual.spins))
    np.testing.assert_allclose(np.asarray(trace.energy), np.stack(energies), rtol=1e-6)
    # "auto" takes the packed kernel at L = 64.
    auto, _ = run_lattice(key, state, 0.4, 6, J=0.8, h=-0.2, measure_every=2)
    np.testing.assert_array_equal(np.asarray(auto.spins), np.asarray(final.spins))


@pytest.mark.parametrize("beta, warmup_calls, calls", [(0.3, 1, 2), (BETA_CRITICAL, 4, 4), (0.6, 1, 2)])
def test_energy_matches_kaufman(beta, warmup_calls, calls):
    """Ordered start, then calls of 1000 sweeps (one compiled function for every β): `warmup_calls` are
    discarded, `calls` measured every 5 sweeps."""
    L, chains = 64, 64
    state = init_lattice(jax.random.key(0), L, chains, ordered=True)
    energies = []
    for call in range(warmup_calls + calls):
        state, trace = run_lattice(jax.random.key(100 + call), state, beta, 1000, measure_every=5, method="packed")
        if call >= warmup_calls:
            energies.append(np.asarray(trace.energy, np.float64))
    per_chain = np.concatenate(energies).mean(0)
    se = per_chain.std(ddof=1) / np.sqrt(chains)
    exact = exact_finite_lattice(L, beta).energy_per_site
    z = (per_chain.mean() - exact) / se
    assert se < 4e-3  # small enough for the comparison to mean something
    assert abs(z) < Z_LIMIT, f"beta={beta}: {per_chain.mean():.5f} ± {se:.5f}, exact {exact:.5f} (z = {z:.2f})"


def test_same_samples_on_any_number_of_devices():
    """Chains split over 1, 2 or 4 devices (forced host devices on CPU) give identical samples."""
    counts = [n for n in (1, 2, 4) if n <= len(jax.devices())]
    key, state = jax.random.key(5), init_lattice(jax.random.key(2), 64, 4)
    runs = [
        run_lattice(key, state, 0.44, 4, measure_every=2, method="packed", devices=jax.devices()[:n]) for n in counts
    ]
    for final, trace in runs[1:]:
        np.testing.assert_array_equal(np.asarray(final.spins), np.asarray(runs[0][0].spins))
        np.testing.assert_array_equal(np.asarray(trace.energy), np.asarray(runs[0][1].energy))
    if len(jax.devices()) >= 2:
        with pytest.raises(HeatbathError, match="cannot be split evenly"):
            run_lattice(key, init_lattice(key, 64, 3), 0.44, 2, method="packed", devices=jax.devices()[:2])


def test_bad_method_and_size():
    state = init_lattice(jax.random.key(0), 32, 2)
    with pytest.raises(HeatbathError, match="multiple of 64"):
        run_lattice(jax.random.key(0), state, 0.4, 2, method="packed")
    with pytest.raises(HeatbathError, match="method must be one of"):
        run_lattice(jax.random.key(0), state, 0.4, 2, method="bits")
    with pytest.raises(HeatbathError, match="multiple of 64"):
        sweep(jax.random.key(0), state, 0.4, method="packed")
    with pytest.raises(HeatbathError, match="Lattice beta contain 1 NaN or infinite"):
        run_lattice(jax.random.key(0), init_lattice(jax.random.key(0), 64, 2), float("nan"), 2)
    with pytest.raises(HeatbathError, match="Lattice J contain 1 NaN or infinite"):
        sweep(jax.random.key(0), state, 0.4, float("inf"))
