"""Exact 2D Ising results: Kaufman's finite torus against brute-force enumeration, Onsager against Kaufman.

Conventions: E = -J sum_<ij> s_i s_j on a periodic M x L lattice (2N bonds), k_B = 1, quantities per site.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from heatbath.errors import HeatbathError
from heatbath.exact.ising2d import (
    BETA_CRITICAL,
    FiniteLatticeExact,
    exact_finite_lattice,
    kaufman_energy_per_site,
    kaufman_log_z,
    kaufman_specific_heat,
    onsager_energy_per_site,
    onsager_free_energy,
    onsager_magnetization,
    onsager_specific_heat,
)

CATALAN = 0.915965594177219015054603514932384110774
# Ferdinand & Fisher: C/N at beta_c grows like A ln L with A = (8/pi) beta_c^2 = (2/pi) ln^2(1 + sqrt 2)
CRITICAL_HEAT_AMPLITUDE = 8 / math.pi * BETA_CRITICAL**2


@functools.cache
def bond_sum_histogram(M: int, L: int) -> tuple[np.ndarray, np.ndarray]:
    """Number of states of the periodic M x L lattice with each value of sum_bonds s_i s_j (by enumeration)."""
    n = M * L
    site = np.arange(n).reshape(M, L)
    left = np.concatenate([site.ravel(), site.ravel()])
    right = np.concatenate([np.roll(site, -1, axis=1).ravel(), np.roll(site, -1, axis=0).ravel()])
    spins = (((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1).astype(np.int8)
    bond_sum = np.sum(spins[:, left] * spins[:, right], axis=1, dtype=np.int64)
    counts = np.bincount(bond_sum + 2 * n)
    levels = np.arange(counts.size) - 2 * n
    keep = counts > 0
    return levels[keep], counts[keep]


def brute_force(M: int, L: int, beta: float, J: float = 1.0) -> FiniteLatticeExact:
    levels, counts = bond_sum_histogram(M, L)
    log_w = np.log(counts) + beta * J * levels
    top = log_w.max()
    w = np.exp(log_w - top)
    p = w / w.sum()
    mean = np.sum(p * levels)
    var = np.sum(p * (levels - mean) ** 2)
    n = M * L
    return FiniteLatticeExact(top + math.log(w.sum()), -J * mean / n, (beta * J) ** 2 * var / n)


SHAPES = [(3, 3), (4, 4), (3, 4), (4, 3), (3, 5), (2, 3), (2, 2)]  # (M, L); sides of 2 have doubled bonds
BETAS = [0.01, 0.1, 0.3, BETA_CRITICAL, 0.6, 1.0]


@pytest.mark.parametrize("M,L", SHAPES)
@pytest.mark.parametrize("beta", BETAS)
def test_kaufman_matches_enumeration(M, L, beta):
    got = exact_finite_lattice(L, beta, M=M)
    want = brute_force(M, L, beta)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=0)


@pytest.mark.parametrize("beta", [2.0, 3.0])
def test_kaufman_matches_enumeration_deep_in_ordered_phase(beta):
    # The specific heat (~64 K^2 e^{-8K}) is accurate in absolute, not relative, terms there.
    got = exact_finite_lattice(4, beta)
    want = brute_force(4, 4, beta)
    np.testing.assert_allclose(got[:2], want[:2], rtol=1e-12)
    assert abs(got.specific_heat_per_site - want.specific_heat_per_site) < 1e-13


def test_single_quantity_functions_and_coupling_scale():
    full = exact_finite_lattice(4, 0.37, M=3)
    assert kaufman_log_z(4, 0.37, M=3) == full.log_z
    assert kaufman_energy_per_site(4, 0.37, M=3) == full.energy_per_site
    assert kaufman_specific_heat(4, 0.37, M=3) == full.specific_heat_per_site
    # Z depends on beta * J only; the energy scales with J.
    scaled = exact_finite_lattice(4, 0.185, J=2.0, M=3)
    np.testing.assert_allclose(scaled.log_z, full.log_z, rtol=1e-14)
    np.testing.assert_allclose(scaled.energy_per_site, 2 * full.energy_per_site, rtol=1e-14)
    np.testing.assert_allclose(scaled.specific_heat_per_site, full.specific_heat_per_site, rtol=1e-14)
    np.testing.assert_allclose(exact_finite_lattice(4, 0.37, J=2.0), brute_force(4, 4, 0.37, J=2.0), rtol=1e-10)


@pytest.mark.parametrize("beta", [0.2, BETA_CRITICAL, 0.6])
def test_rows_and_columns_are_interchangeable(beta):
    np.testing.assert_allclose(exact_finite_lattice(512, beta, M=3), exact_finite_lattice(3, beta, M=512), rtol=1e-12)
    np.testing.assert_allclose(exact_finite_lattice(40, beta, M=24), exact_finite_lattice(24, beta, M=40), rtol=1e-12)


@pytest.mark.parametrize("L", [256, 512])
@pytest.mark.parametrize("beta", [0.3, 0.4, 0.6, 1.0])
def test_kaufman_approaches_onsager(L, beta):
    got = exact_finite_lattice(L, beta)
    n = L * L
    # Below T_c the torus keeps both ordered states: ln Z = N f_Onsager + ln 2 up to exponentially small terms.
    log_z_per_site = (got.log_z - (math.log(2.0) if beta > BETA_CRITICAL else 0.0)) / n
    assert abs(log_z_per_site - onsager_free_energy(beta)) < 1e-9
    assert abs(got.energy_per_site - onsager_energy_per_site(beta)) < 1e-9
    assert abs(got.specific_heat_per_site - onsager_specific_heat(beta)) < 1e-9


def test_critical_specific_heat_grows_like_log_l():
    sizes = [16, 32, 64, 128, 256, 512]
    heat = np.array([kaufman_specific_heat(L, BETA_CRITICAL) for L in sizes])
    assert np.all(np.diff(heat) > 0)
    slope = (heat[-1] - heat[-2]) / math.log(2.0)
    assert abs(slope / CRITICAL_HEAT_AMPLITUDE - 1) < 0.01
    # ... while the energy converges to Onsager's -sqrt(2) with O(1/L) corrections.
    energies = np.array([kaufman_energy_per_site(L, BETA_CRITICAL) for L in sizes])
    assert np.all(np.diff(np.abs(energies + math.sqrt(2))) < 0)
    assert abs(energies[-1] + math.sqrt(2)) < 2e-3


def test_ground_state_limit():
    L = 8
    for beta in [50.0, 199.9, 200.1, 1e4]:
        got = exact_finite_lattice(L, beta)
        np.testing.assert_allclose(got.log_z, 2 * L * L * beta + math.log(2.0), rtol=1e-15)
        assert got.energy_per_site == pytest.approx(-2.0, rel=1e-15)
        assert 0.0 <= got.specific_heat_per_site < 1e-15


def test_high_temperature_limit():
    # ln Z = N ln 2 + 2N ln cosh K + O(N tanh^4 K) on a torus whose shortest loop has length 4.
    K = 1e-6
    got = exact_finite_lattice(8, K)
    np.testing.assert_allclose(got.log_z / 64, math.log(2.0) + 2 * math.log(math.cosh(K)), rtol=1e-15)
    assert abs(got.energy_per_site + 2 * math.tanh(K)) < 1e-15
    np.testing.assert_allclose(got.specific_heat_per_site, 2 * K * K, rtol=1e-9)


# ------------------------------------------------------------------------------------------------ Onsager


def test_onsager_critical_values():
    assert onsager_energy_per_site(BETA_CRITICAL) == pytest.approx(-math.sqrt(2), rel=1e-15)
    assert onsager_energy_per_site(BETA_CRITICAL / 2, J=2.0) == pytest.approx(-2 * math.sqrt(2), rel=1e-15)
    assert onsager_specific_heat(BETA_CRITICAL) == math.inf
    assert onsager_magnetization(BETA_CRITICAL) == 0.0
    # ln Z / N at T_c = ln(2)/2 + 2G/pi, G = Catalan's constant
    assert onsager_free_energy(BETA_CRITICAL) == pytest.approx(math.log(2) / 2 + 2 * CATALAN / math.pi, rel=1e-15)
    assert BETA_CRITICAL == pytest.approx(0.5 * math.log(1 + math.sqrt(2)), rel=1e-16)


@pytest.mark.parametrize("offset", [-1e-9, 1e-9, -1e-5, 1e-5])
def test_onsager_free_energy_is_smooth_through_critical_point(offset):
    # d(ln Z/N)/d beta = -u = sqrt(2) at beta_c; the second-order term is ~ C ln|offset| offset^2 / beta^2
    step = onsager_free_energy(BETA_CRITICAL + offset) - onsager_free_energy(BETA_CRITICAL)
    assert abs(step - math.sqrt(2) * offset) < 50 * offset**2 + 1e-15


def test_onsager_magnetization():
    for beta in [0.1, 0.3, 0.44]:
        assert onsager_magnetization(beta) == 0.0
    for beta in [0.45, 0.6, 1.0, 3.0]:
        want = (1 - math.sinh(2 * beta) ** -4) ** 0.125
        assert onsager_magnetization(beta) == pytest.approx(want, rel=1e-14)
    assert onsager_magnetization(0.3, J=2.0) == pytest.approx(onsager_magnetization(0.6), rel=1e-15)
    assert 0 < onsager_magnetization(BETA_CRITICAL * (1 + 1e-6)) < 0.25


@pytest.mark.parametrize("beta", [0.05, 0.2, 0.35, 0.42, 0.46, 0.55, 0.8, 1.5])
def test_onsager_derivatives_are_consistent(beta):
    # u = -d(ln Z/N)/d beta and C/N = -beta^2 du/d beta, by 4th-order central differences
    h = 1e-3 * beta

    def derivative(f):
        return (8 * (f(beta + h) - f(beta - h)) - (f(beta + 2 * h) - f(beta - 2 * h))) / (12 * h)

    u = onsager_energy_per_site(beta)
    assert -derivative(onsager_free_energy) == pytest.approx(u, rel=1e-9, abs=1e-12)
    c = onsager_specific_heat(beta)
    assert -(beta**2) * derivative(onsager_energy_per_site) == pytest.approx(c, rel=1e-7, abs=1e-12)


def test_onsager_limits():
    # Low temperature: ln Z/N = 2K + e^{-8K} + ..., so C/N = 64 K^2 e^{-8K} (1 + O(e^{-4K})).
    K = 5.0
    assert onsager_specific_heat(K) == pytest.approx(64 * K**2 * math.exp(-8 * K), rel=1e-7)
    assert onsager_energy_per_site(K) == pytest.approx(-2 - 16 * math.exp(-8 * K), rel=1e-15)
    # High temperature: ln Z/N = ln 2 + 2 ln cosh K + tanh^4 K + O(K^6) (one plaquette per site),
    # so with t = tanh K and S = sech^2 K: u = -2t - 4 t^3 S, C/N = K^2 (2S + 12 t^2 S^2 - 8 t^4 S), up to O(K^5).
    K = 1e-3
    t, S = math.tanh(K), 1 / math.cosh(K) ** 2
    assert onsager_free_energy(K) == pytest.approx(math.log(2) + 2 * math.log(math.cosh(K)) + t**4, rel=1e-15)
    assert onsager_energy_per_site(K) == pytest.approx(-2 * t - 4 * t**3 * S, rel=1e-10)
    assert onsager_specific_heat(K) == pytest.approx(K * K * (2 * S + 12 * t * t * S * S - 8 * t**4 * S), rel=1e-10)
    assert onsager_energy_per_site(1e-40) == pytest.approx(-2e-40, rel=1e-15)


def test_onsager_against_scipy_elliptic_integrals():
    special = pytest.importorskip("scipy.special")
    integrate = pytest.importorskip("scipy.integrate")
    for beta in [0.1, 0.3, 0.41, 0.47, 0.6, 1.0]:
        K = beta
        k = 2 * math.sinh(2 * K) / math.cosh(2 * K) ** 2
        kappa, ecal = special.ellipk(k * k), special.ellipe(k * k)
        t2 = math.tanh(2 * K) ** 2
        u = -1 / math.tanh(2 * K) * (1 + 2 / math.pi * (2 * t2 - 1) * kappa)
        c = 4 / math.pi * (K / math.tanh(2 * K)) ** 2 * (kappa - ecal - (1 - t2) * (math.pi / 2 + (2 * t2 - 1) * kappa))
        integral, _ = integrate.quad(
            lambda p: math.log(0.5 * (1 + math.sqrt(1 - (k * math.sin(p)) ** 2))), 0, math.pi, epsabs=1e-14
        )
        f = math.log(2 * math.cosh(2 * K)) + integral / (2 * math.pi)
        assert onsager_energy_per_site(beta) == pytest.approx(u, rel=1e-12)
        assert onsager_specific_heat(beta) == pytest.approx(c, rel=1e-10)
        assert onsager_free_energy(beta) == pytest.approx(f, rel=1e-13)


# ------------------------------------------------------------------------------------------------ inputs


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(L=1, beta=0.3), "L must be >= 2"),
        (dict(L=0, beta=0.3), "L must be >= 2"),
        (dict(L=4.0, beta=0.3), "L must be an integer"),
        (dict(L="4", beta=0.3), "L must be an integer"),
        (dict(L=True, beta=0.3), "L must be an integer"),
        (dict(L=4, beta=0.3, M=1), "M must be >= 2"),
        (dict(L=4, beta=0.0), "beta must be positive"),
        (dict(L=4, beta=-0.3), "beta must be positive"),
        (dict(L=4, beta=math.nan), "beta must be positive"),
        (dict(L=4, beta=math.inf), "beta must be positive"),
        (dict(L=4, beta="0.3"), "beta must be a real number"),
        (dict(L=4, beta=np.array([0.3, 0.4])), "beta must be one real number"),
        (dict(L=4, beta=0.3, J=0.0), "J must be positive"),
        (dict(L=4, beta=0.3, J=-1.0), "antiferromagnet"),
        (dict(L=4, beta=1e200, J=1e200), "overflows"),
        (dict(L=4, beta=1e-70), "infinite temperature"),
    ],
)
def test_bad_finite_lattice_input(kwargs, match):
    for function in [exact_finite_lattice, kaufman_log_z, kaufman_energy_per_site, kaufman_specific_heat]:
        with pytest.raises(HeatbathError, match=match):
            function(**kwargs)


@pytest.mark.parametrize("beta, J", [(0.0, 1.0), (-1.0, 1.0), (math.nan, 1.0), (0.3, 0.0), (0.3, -1.0), ("x", 1.0)])
def test_bad_onsager_input(beta, J):
    for function in [onsager_free_energy, onsager_energy_per_site, onsager_specific_heat, onsager_magnetization]:
        with pytest.raises(ValueError):  # HeatbathError is a ValueError
            function(beta, J)
        with pytest.raises(HeatbathError):
            function(beta, J)


def test_accepts_numpy_scalars():
    got = exact_finite_lattice(np.int64(4), np.float32(0.25), M=np.int32(3))
    np.testing.assert_allclose(got, brute_force(3, 4, float(np.float32(0.25))), rtol=1e-10)
    assert isinstance(got.log_z, float) and isinstance(got.specific_heat_per_site, float)
    assert onsager_energy_per_site(np.array(0.3)) == onsager_energy_per_site(0.3)
