"""Ising KL gradients (estimate_kl_grad / estimate_moments) against exact enumeration, and hinton_init."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from heatbath import Block, SamplingSchedule, SpinNode
from heatbath.exact import exact_distribution, spin_moments
from heatbath.graphs import color_blocks
from heatbath.models import IsingEBM, IsingTrainingSpec, estimate_kl_grad, hinton_init
from stats_helpers import Z_LIMIT


def _model(seed=0, n=8):
    rng = np.random.default_rng(seed)
    nodes = [SpinNode(i) for i in range(n)]
    pairs = [p for p in itertools.combinations(range(n), 2) if rng.random() < 0.5]
    edges = [(nodes[i], nodes[j]) for i, j in pairs]
    biases = jnp.asarray(rng.normal(0, 0.4, n), jnp.float32)
    weights = jnp.asarray(rng.normal(0, 0.4, len(edges)), jnp.float32)
    return IsingEBM(nodes, edges, biases, weights, jnp.asarray(0.9)), nodes, edges


@pytest.mark.parametrize("paired", [False, True])
def test_estimate_kl_grad_matches_exact_gradient(paired, request):
    """Each phase on its own, and (`paired`) both phases in the same updates (`paired_on_cpu`)."""
    calls = request.getfixturevalue("paired_on_cpu") if paired else []
    model, nodes, edges = _model()
    visible, hidden = nodes[:4], nodes[4:]
    rng = np.random.default_rng(1)
    batch = 6
    data = jnp.asarray(rng.random((batch, len(visible))) < 0.5)
    n_pos, n_neg = 2000, 12000
    schedule = SamplingSchedule(60, 1, 1)  # one sample per chain after warm-up: i.i.d. draws
    positive_blocks = color_blocks(model, nodes=hidden)
    negative_blocks = color_blocks(model)
    spec = IsingTrainingSpec(model, [Block(visible)], [], positive_blocks, negative_blocks, schedule, schedule)
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    init_pos = hinton_init(k1, model, positive_blocks, (n_pos, batch))
    init_neg = hinton_init(k2, model, negative_blocks, (n_neg,))
    w_grad, b_grad, pos, neg = estimate_kl_grad(k3, spec, nodes, edges, [data], [], init_pos, init_neg)

    # Exact: positive phase = average over data rows of the conditional moments, negative = model moments.
    dist = exact_distribution(model, [Block(nodes)])
    neg_first, neg_second = spin_moments(dist, nodes, edges)
    pos_first, pos_second, var_first, var_second = 0.0, 0.0, 0.0, 0.0
    for row in np.asarray(data):
        cond = exact_distribution(model, [Block(hidden)], clamped_blocks=[Block(visible)], clamped_state=[jnp.asarray(row)])
        f, s = spin_moments(cond, nodes, edges)
        pos_first, pos_second = pos_first + f / batch, pos_second + s / batch
        var_first = var_first + (1 - f**2) / (batch**2 * n_pos)
        var_second = var_second + (1 - s**2) / (batch**2 * n_pos)
    beta = float(model.beta)
    exact_w = -beta * (pos_second - neg_second)
    exact_b = -beta * (pos_first - neg_first)
    se_w = beta * np.sqrt(var_second + (1 - neg_second**2) / n_neg)
    se_b = beta * np.sqrt(var_first + (1 - neg_first**2) / n_neg)
    z_w = np.abs(np.asarray(w_grad) - exact_w) / se_w
    z_b = np.abs(np.asarray(b_grad) - exact_b) / se_b
    assert z_w.max() < Z_LIMIT, z_w
    assert z_b.max() < Z_LIMIT, z_b
    # Visible nodes are clamped to the data in the positive phase: their moments there are exact.
    np.testing.assert_allclose(np.asarray(pos[0])[:4], 2 * np.asarray(data).mean(0) - 1, atol=1e-6)
    assert np.abs(np.asarray(w_grad)).max() > 0.05  # the gradient is not trivially zero
    assert len(calls) == paired and all(out is not None for out in calls)  # the pairs ran


def test_hinton_init_uses_the_isolated_spin_marginal():
    nodes = [SpinNode() for _ in range(3)]
    biases = jnp.array([0.5, -1.0, 0.0])
    model = IsingEBM(nodes, [], biases, jnp.zeros((0,)), jnp.asarray(0.8))
    n = 200_000
    (init,) = hinton_init(jax.random.key(3), model, [Block(nodes)], (n,))
    p_hat = np.asarray(init).mean(0)
    p = 1 / (1 + np.exp(-2 * 0.8 * np.asarray(biases)))  # P(s=+1) ∝ exp(β b s)
    se = np.sqrt(p * (1 - p) / n)
    assert np.all(np.abs(p_hat - p) / se < Z_LIMIT)
    assert init.dtype == jnp.bool_ and init.shape == (n, 3)
