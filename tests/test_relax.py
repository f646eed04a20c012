"""Reparameterised discrete sampling: exact laws of the hard samples, limits and bias of the relaxations."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from stats_helpers import Z_LIMIT, chi_square_z

from heatbath.errors import HeatbathError
from heatbath.relax import (
    bernoulli_logistic,
    gumbel_max,
    gumbel_softmax,
    relaxed_bernoulli,
    straight_through_bernoulli,
    straight_through_categorical,
)

LOGITS = jnp.array([0.8, -0.5, -1.5, 1.1, 0.0, -3.0], jnp.float32)


def _frequency_z(counts: np.ndarray, probs: np.ndarray) -> float:
    """Largest per-category z-score of the observed frequencies (binomial standard errors)."""
    n = counts.sum()
    se = np.sqrt(probs * (1 - probs) / n)
    return float(np.max(np.abs(counts / n - probs) / se))


def test_gumbel_max_frequencies_match_softmax():
    n = 200_000
    draws = np.asarray(gumbel_max(jnp.broadcast_to(LOGITS, (n, LOGITS.size)), key=jax.random.key(0)))
    counts = np.bincount(draws, minlength=LOGITS.size)
    probs = np.asarray(jax.nn.softmax(LOGITS), np.float64)
    assert chi_square_z(counts, probs) < Z_LIMIT
    assert _frequency_z(counts, probs) < Z_LIMIT


def test_gumbel_max_respects_minus_infinity_and_axis():
    logits = jnp.array([[0.0, -jnp.inf, 0.0], [-jnp.inf, 1.0, -jnp.inf]])
    draws = np.asarray(gumbel_max(jnp.tile(logits, (500, 1)), key=jax.random.key(1)))
    assert set(draws[0::2]) <= {0, 2} and set(draws[1::2]) == {1}
    by_column = gumbel_max(jnp.zeros((5, 7)), key=jax.random.key(2), axis=0)
    assert by_column.shape == (7,) and int(by_column.max()) < 5


def test_straight_through_forward_is_exactly_one_hot_and_exact_in_law():
    n = 100_000
    y = straight_through_categorical(jnp.broadcast_to(LOGITS, (n, LOGITS.size)), 0.7, key=jax.random.key(3))
    y = np.asarray(y)
    assert set(np.unique(y)) == {0.0, 1.0} and np.all(y.sum(axis=1) == 1.0)
    # same noise as gumbel_max with the same key: the forward sample is its one-hot code
    hard = gumbel_max(jnp.broadcast_to(LOGITS, (n, LOGITS.size)), key=jax.random.key(3))
    np.testing.assert_array_equal(y.argmax(axis=1), np.asarray(hard))
    probs = np.asarray(jax.nn.softmax(LOGITS), np.float64)
    assert _frequency_z(y.sum(axis=0), probs) < Z_LIMIT


def test_straight_through_gradient_is_the_relaxed_gradient():
    key = jax.random.key(4)
    w = jnp.arange(6.0)

    def hard_loss(t):
        return straight_through_categorical(t, 0.5, key=key) @ w

    def soft_loss(t):
        return gumbel_softmax(t, 0.5, key=key) @ w

    np.testing.assert_allclose(jax.grad(hard_loss)(LOGITS), jax.grad(soft_loss)(LOGITS), rtol=1e-6, atol=1e-7)


def test_gumbel_softmax_tends_to_one_hot_as_temperature_falls():
    n = 20_000
    logits = jnp.broadcast_to(LOGITS, (n, LOGITS.size))
    hard = np.asarray(gumbel_max(logits, key=jax.random.key(5)))
    distances = []
    for tau in (2.0, 1.0, 0.3, 0.1, 0.01):
        y = np.asarray(gumbel_softmax(logits, tau, key=jax.random.key(5)))
        np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
        distances.append(np.abs(y - np.eye(LOGITS.size)[hard]).sum(axis=1).mean())
    assert all(a > b for a, b in itertools.pairwise(distances)), distances
    assert distances[-1] < 0.01


def test_gumbel_softmax_gradient_bias_shrinks_with_temperature():
    """Pathwise gradient of E[f(y)], y ~ Gumbel-softmax, against the exact gradient of E_p[f(one-hot)].

    f(y) = yᵀAy + bᵀy. With p = softmax(θ), E_p[f] = Σ_k p_k f(e_k) and ∂E_p[f]/∂θ_j = p_j (f_j − Σ_k p_k f_k),
    f_k = A_kk + b_k. The bias is the norm of (mean estimated gradient − exact gradient); its standard error
    comes from the per-component sample standard deviations (delta method), temperatures use independent noise.
    """
    theta = jnp.array([0.5, -0.3, 1.0, -1.2], jnp.float32)
    a = jnp.array(
        [
            [1.0, -0.5, 0.3, 0.0],
            [-0.5, 0.8, 0.2, 0.4],
            [0.3, 0.2, -1.0, 0.1],
            [0.0, 0.4, 0.1, 0.6],
        ]
    )
    b = jnp.array([0.4, -0.8, 0.2, 1.0])
    p = np.asarray(jax.nn.softmax(theta), np.float64)
    f_vertices = np.diag(np.asarray(a)) + np.asarray(b)
    exact = p * (f_vertices - p @ f_vertices)

    def objective(t, tau, key):
        y = gumbel_softmax(t, tau, key=key)
        return y @ a @ y + b @ y

    n = 100_000
    estimate = jax.jit(jax.vmap(jax.grad(objective), in_axes=(None, None, 0)))
    biases, errors = [], []
    for i, tau in enumerate((2.0, 1.0, 0.5, 0.2)):
        g = np.asarray(
            estimate(theta, jnp.float32(tau), jax.random.split(jax.random.key(10 + i), n)),
            np.float64,
        )
        diff = g.mean(axis=0) - exact
        bias = np.linalg.norm(diff)
        se = g.std(axis=0, ddof=1) / np.sqrt(n)
        biases.append(bias)
        errors.append(np.sqrt(np.sum((diff / bias) ** 2 * se**2)))
    for k in range(len(biases) - 1):
        drop = biases[k] - biases[k + 1]
        assert drop > Z_LIMIT * np.hypot(errors[k], errors[k + 1]), (biases, errors)
    assert biases[-1] < 0.25 * biases[0]


def test_bernoulli_samplers():
    n = 200_000
    logit = jnp.full((n,), 0.7)
    p = float(jax.nn.sigmoid(0.7))
    se = np.sqrt(p * (1 - p) / n)
    exact = np.asarray(bernoulli_logistic(logit, key=jax.random.key(6)))
    assert set(np.unique(exact)) == {0.0, 1.0}
    assert abs(exact.mean() - p) < Z_LIMIT * se
    st = np.asarray(straight_through_bernoulli(logit, 0.5, key=jax.random.key(6)))
    np.testing.assert_array_equal(st, exact)  # same noise, same hard draw
    relaxed = np.asarray(relaxed_bernoulli(logit, 0.05, key=jax.random.key(6)))
    assert np.all((relaxed > 0) & (relaxed < 1) | np.isin(relaxed, [0.0, 1.0]))
    assert np.mean(np.abs(relaxed - exact)) < 0.02
    # the relaxed Bernoulli is the first component of a two-category Gumbel-softmax: same law at tau = 1
    two = np.asarray(gumbel_softmax(jnp.broadcast_to(jnp.array([0.7, 0.0]), (n, 2)), 1.0, key=jax.random.key(7)))
    one = np.asarray(relaxed_bernoulli(logit, 1.0, key=jax.random.key(8)))
    for q in (0.1, 0.5, 0.9):
        assert abs(np.mean(two[:, 0] < q) - np.mean(one < q)) < Z_LIMIT * np.sqrt(0.5 / n)
    g = jax.grad(lambda t: straight_through_bernoulli(t, 0.5, key=jax.random.key(9)))(0.3)
    g_soft = jax.grad(lambda t: relaxed_bernoulli(t, 0.5, key=jax.random.key(9)))(0.3)
    np.testing.assert_allclose(g, g_soft, rtol=1e-6)


def test_works_under_jit():
    f = jax.jit(lambda t, k: straight_through_categorical(t, 0.5, key=k))
    assert f(LOGITS, jax.random.key(0)).shape == LOGITS.shape


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf"), "1", [1.0, 2.0]])
def test_bad_temperature_raises(temperature):
    with pytest.raises(HeatbathError, match="temperature"):
        gumbel_softmax(LOGITS, temperature, key=jax.random.key(0))
    with pytest.raises(HeatbathError, match="temperature"):
        relaxed_bernoulli(0.0, temperature, key=jax.random.key(0))


@pytest.mark.parametrize(
    "logits",
    [
        jnp.array([0.0, jnp.nan]),
        jnp.array([0.0, jnp.inf]),
        jnp.array([-jnp.inf, -jnp.inf]),
        jnp.array(1.0),
    ],
)
def test_bad_logits_raise(logits):
    for fn in (
        lambda: gumbel_max(logits, key=jax.random.key(0)),
        lambda: gumbel_softmax(logits, 1.0, key=jax.random.key(0)),
    ):
        with pytest.raises(HeatbathError, match="logits"):
            fn()
    with pytest.raises(HeatbathError):
        straight_through_bernoulli(jnp.array([jnp.nan]), key=jax.random.key(0))
