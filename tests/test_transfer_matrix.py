"""Transfer matrix of an Ising strip: exact references, and the learned stationary distribution against them."""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from stats_helpers import Z_LIMIT

from heatbath.errors import HeatbathError
from heatbath.exact import BETA_CRITICAL, onsager_free_energy
from heatbath.variational.made import MADE
from heatbath.variational.transfer_matrix import (
    TransferMatrix,
    enumerate_rows,
    exact_stationary,
    fit_stationary,
    free_energy_per_site,
    ising_bond_weights,
    log_lambda_estimate,
    power_iteration,
)

WIDTH = 10
BETAS = (0.3, BETA_CRITICAL, 0.6)


def _brute_force_t(w: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """T[x, x'] straight from the definition, by loops over rows and sites (float64)."""
    k = w.shape[0]
    rows = np.array(list(itertools.product(range(k), repeat=width)))
    t = np.ones((len(rows), len(rows)))
    for a, x in enumerate(rows):
        for b, xp in enumerate(rows):
            for i in range(width):
                t[a, b] *= w[xp[i], xp[(i + 1) % width]] * w[x[i], xp[i]]
    return rows, t


def test_weights_match_the_definition_for_a_general_bond_matrix():
    w = np.array([[1.3, 0.4, 2.0], [0.7, 1.1, 0.5], [0.9, 1.7, 0.6]])  # K = 3, not symmetric
    tm = TransferMatrix(w, 3)
    rows, t = _brute_force_t(w, 3)
    np.testing.assert_array_equal(np.asarray(enumerate_rows(tm)), rows)
    np.testing.assert_allclose(np.asarray(tm.dense()), t, rtol=1e-5)
    # T(x') = sum_x T(x, x') = h(x') prod_i w_{x'_i}
    np.testing.assert_allclose(np.exp(np.asarray(tm.log_marginal(rows))), t.sum(axis=0), rtol=1e-5)
    # the seed's update for a non-symmetric W: fixed point = Perron vector of the dense T
    values, vectors = np.linalg.eig(t)
    top = np.argmax(values.real)
    perron = np.abs(vectors[:, top].real)
    p, log_norms = power_iteration(tm, 200)
    np.testing.assert_allclose(p, perron / perron.sum(), atol=1e-6)
    assert abs(log_norms[-1] - math.log(values[top].real)) < 1e-5


def test_site_flip_kernel_is_t_over_its_marginal():
    w = np.array([[2.0, 0.5], [0.25, 1.0]])
    tm = TransferMatrix(w, 4)
    x_prime = jnp.tile(jnp.array([[0, 1, 1, 0]]), (100_000, 1))
    x = np.asarray(tm.sample_next_row(x_prime, key=jax.random.key(0)))
    expected_one = w[1, [0, 1, 1, 0]] / w.sum(axis=0)[[0, 1, 1, 0]]  # P(x_i = 1 | x'_i) = W[1, x'_i] / w_{x'_i}
    se = np.sqrt(expected_one * (1 - expected_one) / x.shape[0])
    assert np.all(np.abs(x.mean(axis=0) - expected_one) < Z_LIMIT * se)


@pytest.mark.parametrize("beta", BETAS)
def test_exact_reference_agrees_with_dense_eigenvector_and_power_iteration(beta):
    width = 8
    tm = TransferMatrix(ising_bond_weights(beta), width)
    exact = exact_stationary(tm)
    t = np.asarray(tm.dense(), np.float64)  # checked against the definition in the test above
    values, vectors = np.linalg.eig(t)
    top = np.argmax(values.real)
    perron = np.abs(vectors[:, top].real)
    np.testing.assert_allclose(exact.stationary, perron / perron.sum(), rtol=1e-5, atol=1e-9)
    assert abs(exact.log_lambda - math.log(values[top].real)) < 1e-5
    p, log_norms = power_iteration(tm, 300)
    np.testing.assert_allclose(p, exact.stationary, rtol=1e-9, atol=1e-12)
    assert abs(log_norms[-1] - exact.log_lambda) < 1e-9
    # the fixed point of p' = T p / sum T(x') p(x') and its normaliser is lambda_max
    marginal = t.sum(axis=0)
    np.testing.assert_allclose(
        t @ exact.stationary / (marginal @ exact.stationary),
        exact.stationary,
        rtol=1e-5,
    )
    assert abs(math.log(marginal @ exact.stationary) - exact.log_lambda) < 1e-5


@pytest.mark.parametrize("beta", BETAS)
def test_strip_free_energy_approaches_onsager(beta):
    gaps = [
        exact_stationary(TransferMatrix(ising_bond_weights(beta), n)).log_lambda / n - onsager_free_energy(beta)
        for n in (4, 6, 8, 10, 12)
    ]
    assert all(a > b > 0 for a, b in itertools.pairwise(gaps)), gaps
    assert gaps[-1] < 2e-3
    if beta == BETA_CRITICAL:
        # conformal finite-size correction of a periodic strip: ln(lambda)/N - ln Z_inf/site = pi c / (6 N^2), c = 1/2
        assert abs(12**2 * gaps[-1] / (math.pi / 12) - 1) < 0.01
    else:
        assert gaps[-1] < 1e-5  # away from criticality the correction is exponentially small in N


@functools.cache
def _fit(beta: float):
    tm = TransferMatrix(ising_bond_weights(beta), WIDTH)
    made = MADE(WIDTH, 2, hidden=(32, 32), key=jax.random.key(0))
    fit = fit_stationary(
        tm,
        made,
        key=jax.random.key(1),
        n_steps=300,
        batch_size=1024,
        learning_rate=1e-2,
    )
    return tm, exact_stationary(tm), fit


@pytest.mark.parametrize("beta", BETAS)
def test_learned_stationary_distribution_matches_exact(beta):
    _tm, exact, fit = _fit(beta)
    log_q = np.asarray(fit.model.log_prob(exact.rows), np.float64)
    np.testing.assert_allclose(np.exp(log_q).sum(), 1.0, rtol=1e-4)
    p = exact.stationary
    kl = float(np.sum(p * (np.log(p) - log_q)))
    assert kl < 0.01, f"KL(p_exact || q) = {kl:.4f} nats at beta = {beta:.4f}"
    if beta == 0.6:
        # the two ordered rows (all state 0, all state 1) carry the same mass, close to the exact one
        q_down, q_up = math.exp(log_q[0]), math.exp(log_q[-1])
        assert abs(q_up - q_down) < 0.1 * max(q_up, q_down)
        assert abs(q_up / p[-1] - 1) < 0.2 and abs(q_down / p[0] - 1) < 0.2


@pytest.mark.parametrize("beta", BETAS)
def test_free_energy_from_the_learned_model(beta):
    tm, exact, fit = _fit(beta)
    estimate = log_lambda_estimate(tm, fit.model, key=jax.random.key(2), n_samples=65_536, n_rows=40)
    f_exact = free_energy_per_site(exact.log_lambda, beta, WIDTH)
    f_learned = free_energy_per_site(estimate.log_lambda, beta, WIDTH)
    assert abs(f_learned / f_exact - 1) < 1e-3, (f_learned, f_exact)
    # the model alone (first row, no power-iteration correction) is already within 2%
    assert abs(free_energy_per_site(estimate.first_row, beta, WIDTH) / f_exact - 1) < 0.02


def test_bad_input_raises():
    with pytest.raises(HeatbathError, match="square"):
        TransferMatrix(np.ones((2, 3)), 4)
    with pytest.raises(HeatbathError, match="positive"):
        TransferMatrix(np.array([[1.0, -1.0], [-1.0, 1.0]]), 4)
    with pytest.raises(HeatbathError, match="width"):
        TransferMatrix(np.ones((2, 2)), 1)
    tm = TransferMatrix(ising_bond_weights(0.3), 6)
    with pytest.raises(HeatbathError, match="units"):
        fit_stationary(
            tm,
            MADE(5, 2, hidden=(8,), key=jax.random.key(0)),
            key=jax.random.key(0),
            n_steps=1,
        )
    with pytest.raises(HeatbathError, match="symmetric"):
        exact_stationary(TransferMatrix(np.array([[1.0, 2.0], [0.5, 1.0]]), 4))
    with pytest.raises(HeatbathError, match="symmetrize"):
        fit_stationary(
            TransferMatrix(np.array([[1.0, 2.0], [0.5, 1.0]]), 4),
            MADE(4, 2, hidden=(8,), key=jax.random.key(0)),
            key=jax.random.key(0),
            n_steps=1,
            symmetrize=True,
        )
    with pytest.raises(HeatbathError, match="states"):
        tm.log_marginal(jnp.full((3, 6), 2))
    with pytest.raises(HeatbathError, match="enumerate"):
        enumerate_rows(TransferMatrix(ising_bond_weights(0.3), 20))
