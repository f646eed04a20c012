"""The checkerboard lattice sampler against exact enumeration of the 4x4 torus (2^16 states).

Error bars: each chain's time average is one sample; chains are independent, so the standard error
of the mean over chains is honest whatever the autocorrelation within a chain.
"""

from __future__ import annotations

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
import pytest

from heatbath.errors import HeatbathError
from heatbath.kernels import (
    LatticeIsingState,
    energy_per_site,
    init_lattice,
    magnetization_per_site,
    random_bits,
    run_lattice,
    sweep,
    threefry2x32,
)

Z_LIMIT = 4.0
L = 4


def _all_states(L: int) -> np.ndarray:
    """Every ±1 configuration of an L×L lattice, shape [2^(L*L), L, L]."""
    n = L * L
    codes = np.arange(2**n, dtype=np.int64)[:, None] >> np.arange(n)
    return (1 - 2 * (codes & 1)).astype(np.int8).reshape(-1, L, L)


def _numpy_energy(states: np.ndarray, J: float, h: float) -> np.ndarray:
    """E = -J sum_<ij> s_i s_j - h sum_i s_i on the torus, for states of shape [..., L, L]."""
    s = states.astype(np.int64)
    bonds = (s * np.roll(s, 1, -2) + s * np.roll(s, 1, -1)).sum((-2, -1))
    return -J * bonds - h * s.sum((-2, -1))


def _exact(beta: float, J: float, h: float):
    states = _all_states(L)
    log_w = -beta * _numpy_energy(states, J, h)
    probs = np.exp(log_w - log_w.max())
    probs /= probs.sum()
    e = _numpy_energy(states, J, h) / L**2
    m = states.sum((1, 2)) / L**2
    moments = {"energy": probs @ e, "magnetization": probs @ m, "m2": probs @ m**2}
    return states, probs, moments


@pytest.mark.parametrize(
    "beta, J, h, start",
    [
        (0.3, 1.0, 0.1, "random"),  # fast mixing: also checks convergence from a random start
        # Slow tunnelling between the two ordered phases (~1000 sweeps): start from exact draws, so the
        # test checks that the sweep leaves the Boltzmann distribution invariant.
        (0.6, 1.0, 0.1, "exact"),
        (0.5, -0.7, 0.3, "random"),  # antiferromagnet in a field
    ],
)
def test_matches_enumeration(beta, J, h, start):
    n_chains, n_warmup, n_sweeps = 2000, 200, 2000
    states, probs, exact = _exact(beta, J, h)
    key_init, key_warm, key_run = jax.random.split(jax.random.key(7), 3)
    if start == "exact":
        draws = np.random.default_rng(3).choice(len(probs), size=n_chains, p=probs)
        state = LatticeIsingState(jnp.asarray(np.moveaxis(states[draws], 0, -1)))
    else:
        state = init_lattice(key_init, L, n_chains)
    state, _ = run_lattice(key_warm, state, beta, n_warmup, J=J, h=h)
    _, trace = run_lattice(key_run, state, beta, n_sweeps, J=J, h=h)
    per_chain = {
        "energy": np.asarray(trace.energy, np.float64).mean(0),
        "magnetization": np.asarray(trace.magnetization, np.float64).mean(0),
        "m2": (np.asarray(trace.magnetization, np.float64) ** 2).mean(0),
    }
    for name, values in per_chain.items():
        se = values.std(ddof=1) / np.sqrt(n_chains)
        z = (values.mean() - exact[name]) / se
        assert abs(z) < Z_LIMIT, f"{name}: {values.mean():.5f} ± {se:.5f}, exact {exact[name]:.5f} (z = {z:.2f})"


def test_run_lattice_equals_indexed_sweeps():
    key = jax.random.key(11)
    state = init_lattice(jax.random.key(1), 6, 5)
    final, trace = run_lattice(key, state, 0.4, 6, J=0.8, h=-0.2, measure_every=2)
    manual = state
    energies = []
    for t in range(6):
        manual = sweep(key, manual, 0.4, 0.8, -0.2, index=t)
        if t % 2 == 1:
            energies.append(energy_per_site(manual.spins, 0.8, -0.2))
    np.testing.assert_array_equal(np.asarray(final.spins), np.asarray(manual.spins))
    np.testing.assert_allclose(np.asarray(trace.energy), np.stack(energies), rtol=1e-6)
    assert trace.energy.shape == trace.magnetization.shape == (3, 5)
    assert final.spins.dtype == jnp.int8


def test_observables_match_numpy():
    spins = np.asarray(init_lattice(jax.random.key(2), 6, 7).spins)
    expected_e = _numpy_energy(np.moveaxis(spins, -1, 0), 1.3, 0.4) / 36
    np.testing.assert_allclose(np.asarray(energy_per_site(jnp.asarray(spins), 1.3, 0.4)), expected_e, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(magnetization_per_site(jnp.asarray(spins))), spins.sum((0, 1)) / 36)


def test_init_lattice():
    ordered = init_lattice(jax.random.key(0), 8, 3, ordered=True)
    assert ordered.spins.shape == (8, 8, 3) and ordered.spins.dtype == jnp.int8
    assert bool(jnp.all(ordered.spins == 1))
    random = np.asarray(init_lattice(jax.random.key(0), 64, 16).spins)
    assert set(np.unique(random)) == {-1, 1}
    assert abs(random.mean()) < 0.02


def test_threefry_matches_jax_reference():
    key = jnp.array([0x13198A2E, 0x03707344], jnp.uint32)
    counters = jnp.arange(64, dtype=jnp.uint32)
    expected = jex.random.threefry_2x32(key, counters)
    a, b = threefry2x32((key[0], key[1]), counters[:32], counters[32:])
    np.testing.assert_array_equal(np.concatenate([a, b]), np.asarray(expected))


def test_random_bits_uniform():
    bits = np.asarray(random_bits(jax.random.key(5), (4, 32, 32, 64)))
    u = bits.astype(np.float64) / 2**32
    assert abs(u.mean() - 0.5) < 4 * np.sqrt(1 / 12 / u.size)
    # Different streams under one key are different words (a shared word would be a 2**-32 coincidence).
    other = np.asarray(random_bits(jax.random.key(5), (4, 32, 32, 64), stream=1))
    assert np.mean(bits == other) < 1e-4
    # Every bit position is fair.
    ones = (bits[..., None] >> np.arange(32, dtype=np.uint32) & 1).mean(axis=(0, 1, 2, 3))
    assert np.all(np.abs(ones - 0.5) < 4 * 0.5 / np.sqrt(bits.size))


@pytest.mark.parametrize("L_bad", [3, 5, 0])
def test_odd_lattice_rejected(L_bad):
    with pytest.raises(HeatbathError, match="even lattice side"):
        init_lattice(jax.random.key(0), L_bad, 4)
    with pytest.raises(HeatbathError, match="even lattice side"):
        sweep(jax.random.key(0), LatticeIsingState(jnp.ones((L_bad, L_bad, 2), jnp.int8)), 0.4)


def test_bad_state_rejected():
    with pytest.raises(HeatbathError, match="int8"):
        sweep(jax.random.key(0), LatticeIsingState(jnp.ones((4, 4, 2), jnp.int32)), 0.4)
    with pytest.raises(HeatbathError, match=r"shape \[L, L, chains\]"):
        run_lattice(jax.random.key(0), LatticeIsingState(jnp.ones((4, 6, 2), jnp.int8)), 0.4, 10)
    with pytest.raises(HeatbathError, match="multiple of measure_every"):
        run_lattice(jax.random.key(0), init_lattice(jax.random.key(0), 4, 2), 0.4, 10, measure_every=3)
