"""The general KL-gradient estimator works on continuous models (their factors have differentiable energies)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import heatbath.train as ht
from heatbath import Block, ContinuousNode, SamplingSchedule, SpinNode
from heatbath.models import GaussianBernoulliEBM, GaussianEBM, GaussianGibbsConditional, MixedSpinGibbsConditional
from heatbath.train.spec import default_sampler
from stats_helpers import Z_LIMIT


def _gaussian(n=6, seed=0):
    rng = np.random.default_rng(seed)
    nodes = [ContinuousNode(i) for i in range(n)]
    edges = [(nodes[i], nodes[i + 1]) for i in range(n - 1)]
    return GaussianEBM(
        nodes,
        diagonal=rng.uniform(1.5, 2.5, n),
        edges=edges,
        edge_weights=rng.uniform(-0.5, 0.5, n - 1),
        mean=rng.normal(0, 1, n),
    ), nodes


def test_default_samplers_cover_continuous_and_mixed_models():
    model, nodes = _gaussian()
    assert isinstance(default_sampler(model, Block(nodes)), GaussianGibbsConditional)

    spins = [SpinNode(), SpinNode()]
    gb = GaussianBernoulliEBM(
        nodes[:2], spins, quadratic=jnp.ones(2), mixed_edges=[(spins[0], nodes[0])], mixed_weights=jnp.ones(1)
    )
    assert isinstance(default_sampler(gb, Block(spins)), MixedSpinGibbsConditional)


def test_gaussian_model_phase_matches_exact_moments():
    model, nodes = _gaussian()
    cov = np.linalg.inv(model.precision_matrix())
    mean = np.asarray(model.mean, np.float64)
    schedule = SamplingSchedule(40, 1, 1)  # one sample per chain after warm-up: independent draws
    spec = ht.TrainingSpec(model, [Block(nodes)], [], [], model.free_blocks(), schedule, schedule)
    data = jnp.asarray(np.random.default_rng(1).normal(0, 1, (8, len(nodes))), jnp.float32)
    n_chains = 4000
    init_neg = [jnp.zeros((n_chains, len(b)), jnp.float32) for sb in model.free_blocks() for b in sb]
    grads, pos, neg = ht.estimate_kl_grad(jax.random.key(0), spec, [data], [], None, init_neg)

    # The energy is 1/2 sum d x^2 + sum w x_u x_v - (A mu).x (constants dropped: they cancel between the
    # phases), so dE/dd_i = x_i^2/2 - mu_i x_i, dE/dw_uv = x_u x_v - mu_v x_u - mu_u x_v, dE/dmu = -A x.
    second = cov + np.outer(mean, mean)
    u, v = model.edge_index[:, 0], model.edge_index[:, 1]
    exact = {
        "precision_diagonal": 0.5 * np.diag(second) - mean**2,
        "edge_weights": second[u, v] - 2 * mean[u] * mean[v],
        "mean": -model.precision_matrix() @ mean,
    }
    for name, want in exact.items():
        got, se = np.asarray(getattr(neg.grad, name)), np.asarray(getattr(neg.grad_stderr, name))
        assert np.all(se > 0) and np.all(np.abs(got - want) / se < Z_LIMIT), (name, got, want, se)
    # The positive phase of a fully visible model is the data average itself.
    x = np.asarray(data, np.float64)
    np.testing.assert_allclose(np.asarray(pos.grad.mean), (-model.precision_matrix() @ x.T).mean(1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(grads.precision_diagonal),
        np.asarray(pos.grad.precision_diagonal) - np.asarray(neg.grad.precision_diagonal),
        rtol=1e-5,
        atol=1e-6,
    )
