"""Variational autoregressive models: MADE exactness, reverse-KL gradients and training, exact MH with a learned proposal.

Statistical checks use error bars derived from the number of independent samples; seeds are fixed.
"""

from __future__ import annotations

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from stats_helpers import chi_square_z

from heatbath import Block, HeatbathError, SpinNode
from heatbath.exact import exact_distribution, kaufman_log_z, spin_moments
from heatbath.graphs import lattice_2d
from heatbath.models.ising import IsingEBM
from heatbath.variational import (
    MADE,
    EBMEnergy,
    GibbsKernel,
    SpinGlassEnergy,
    Z2Symmetric,
    annealed_beta,
    energy_from_ebm,
    evaluate,
    exact_variational_free_energy,
    free_energy_gradient,
    sample_with_proposal,
    spins_to_states,
    states_to_spins,
    train_reverse_kl,
)

Z_LIMIT = 5.0


def randomised(model: MADE, seed: int, scale: float = 0.7) -> MADE:
    """The model with every float parameter perturbed, so that q is far from uniform (numpy noise: no compiles)."""
    rng = np.random.default_rng(seed)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    params = jax.tree.map(lambda p: p + (scale * rng.normal(size=p.shape)).astype(np.float32), params)
    return eqx.combine(params, static)


def all_states(n: int, k: int) -> jnp.ndarray:
    return jnp.asarray(list(itertools.product(range(k), repeat=n)), jnp.int32)


def random_spin_glass(n: int, seed: int, density: float = 0.5, beta: float = 1.0):
    """An IsingEBM with random ±1 couplings on a random graph and small random fields (frustrated)."""
    rng = np.random.default_rng(seed)
    nodes = [SpinNode() for _ in range(n)]
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if rng.random() < density]
    edges = [(nodes[i], nodes[j]) for i, j in pairs]
    weights = jnp.asarray(rng.choice([-1.0, 1.0], len(edges)), jnp.float32)
    biases = jnp.asarray(0.3 * rng.normal(size=n), jnp.float32)
    return IsingEBM(nodes, edges, biases, weights, beta), pairs


# ---------------------------------------------------------------------------------------------- MADE


@pytest.mark.parametrize("n_units, n_states", [(6, 2), (4, 3)])
def test_made_normalised(n_units, n_states):
    model = randomised(MADE(n_units, n_states, (16, 16), key=jax.random.key(0)), seed=1)
    log_p = model.log_prob(all_states(n_units, n_states))
    assert float(jnp.exp(jax.nn.logsumexp(log_p))) == pytest.approx(1.0, abs=1e-5)
    assert float(jnp.std(log_p)) > 0.3  # really non-uniform


def test_made_sample_frequencies_match_log_prob():
    n_units, n_states, n = 4, 3, 40_000
    model = randomised(MADE(n_units, n_states, (16,), key=jax.random.key(2)), seed=3)
    x, log_q = model.sample_and_log_prob(n, key=jax.random.key(4))
    np.testing.assert_allclose(log_q, model.log_prob(x), atol=1e-5)
    probs = np.exp(np.asarray(model.log_prob(all_states(n_units, n_states)), np.float64))
    idx = np.ravel_multi_index(np.asarray(x).T, (n_states,) * n_units)
    z = chi_square_z(np.bincount(idx, minlength=probs.size), probs / probs.sum())
    assert z < Z_LIMIT, f"sample frequencies differ from exp(log_prob): chi-square z = {z:.2f}"


@pytest.mark.parametrize("hidden", [(12, 12), ()])
def test_made_is_autoregressive(hidden):
    n_units, n_states = 5, 3
    model = randomised(MADE(n_units, n_states, hidden, key=jax.random.key(5)), seed=6)
    y = jax.nn.one_hot(jax.random.randint(jax.random.key(7), (1, n_units), 0, n_states), n_states)
    jac = jax.jit(jax.jacobian(model.logits_from_one_hot))(y)[0, :, :, 0]  # [units, states, units, states]
    dependence = np.abs(np.asarray(jac)).sum(axis=(1, 3))  # [i, j]: does logit i depend on input j
    assert np.all(dependence[np.triu_indices(n_units)] == 0), "a conditional reads its own or a later unit"
    assert np.all(dependence[np.tril_indices(n_units, -1)] > 0), "a conditional ignores an earlier unit"
    # the same by changing states: units >= i do not move conditional i
    x = np.random.default_rng(8).integers(0, n_states, (50, n_units), dtype=np.int32)
    logits = np.asarray(model.logits(x))
    for i in range(n_units):
        x2 = x.copy()
        x2[:, i:] = (x2[:, i:] + 1) % n_states
        np.testing.assert_array_equal(logits[:, i], np.asarray(model.logits(x2))[:, i])


@pytest.mark.parametrize("hidden, n_states", [((16, 16), 3), ((), 2)])
def test_incremental_sampling_equals_naive(hidden, n_states):
    model = randomised(MADE(7, n_states, hidden, key=jax.random.key(9)), seed=10)
    key = jax.random.key(11)
    np.testing.assert_array_equal(model.sample(64, key=key), model.sample_naive(64, key=key))


def test_straight_through_samples_are_exact_one_hot():
    model = randomised(MADE(6, 3, (8,), key=jax.random.key(12)), seed=13)
    y, log_q = model.sample_straight_through(32, 0.5, key=jax.random.key(14))
    assert set(np.unique(np.asarray(y))) <= {0.0, 1.0} and np.all(np.asarray(y).sum(-1) == 1)
    np.testing.assert_allclose(log_q, model.log_prob(jnp.argmax(y, -1)), atol=1e-5)


def test_spin_state_conversion_roundtrip():
    s = jnp.array([[1, -1, -1, 1]])
    assert np.array_equal(spins_to_states(s), [[1, 0, 0, 1]])
    assert np.array_equal(states_to_spins(spins_to_states(s)), s)


def test_energy_adapters_agree_with_ebm():
    ebm, _ = random_spin_glass(8, seed=20, beta=0.8)
    dense, generic = energy_from_ebm(ebm), EBMEnergy(ebm, [Block(ebm.nodes)])
    assert isinstance(dense, SpinGlassEnergy)
    x = jax.random.randint(jax.random.key(21), (40, 8), 0, 2)
    np.testing.assert_allclose(dense(x), generic(x), rtol=1e-5, atol=1e-5)


# -------------------------------------------------------------------------------------- gradients


def test_score_function_gradient_is_unbiased():
    """REINFORCE + leave-one-out baseline vs jax.grad of F_q computed by enumerating all 2^6 states."""
    ebm, _ = random_spin_glass(6, seed=30)
    energy, beta = energy_from_ebm(ebm), 0.8
    model = randomised(MADE(6, 2, (8,), key=jax.random.key(31)), seed=32, scale=0.5)
    exact = eqx.filter_grad(lambda m: exact_variational_free_energy(m, energy, beta))(model)
    n_batches, batch = 1000, 16

    @jax.jit
    def estimates(keys):
        return jax.vmap(lambda k: free_energy_gradient(model, energy, beta, batch, key=k)[0])(keys)

    draws = estimates(jax.random.split(jax.random.key(33), n_batches))

    def flat(tree, lead=()):
        leaves = jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))
        return jnp.concatenate([x.reshape(*lead, -1) for x in leaves], -1)

    g_exact, g_draws = np.asarray(flat(exact), np.float64), np.asarray(flat(draws, (n_batches,)), np.float64)
    mean, se = g_draws.mean(0), g_draws.std(0, ddof=1) / np.sqrt(n_batches)
    active = se > 0
    z = (mean[active] - g_exact[active]) / se[active]
    print(f"\nscore-function gradient: max |z| {np.abs(z).max():.2f} over {z.size} components", end="")
    assert np.abs(z).max() < Z_LIMIT, f"gradient component off by {np.abs(z).max():.2f} standard errors"
    # along the exact gradient direction (a single, powerful check)
    u = g_exact / np.linalg.norm(g_exact)
    proj = g_draws @ u
    z_proj = (proj.mean() - np.linalg.norm(g_exact)) / (proj.std(ddof=1) / np.sqrt(n_batches))
    print(f", projected z {z_proj:+.2f}")
    assert abs(z_proj) < 4.0, f"projected gradient z = {z_proj:.2f}"
    assert proj.mean() > 10 * proj.std(ddof=1) / np.sqrt(n_batches)  # the test has power: signal >> noise


# -------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def ising_l8():
    lattice = lattice_2d(8, periodic=True)
    ebm = IsingEBM(lattice.nodes, lattice.edges, jnp.zeros(64), jnp.ones(len(lattice.edges)), 1.0)
    return energy_from_ebm(ebm)  # E(s) = -sum_<ij> s_i s_j (J = 1); the target inverse temperature is set below


@pytest.mark.parametrize("beta", [0.3, 0.44])
def test_reverse_kl_ising_l8_matches_kaufman(ising_l8, beta):
    """F_q (variational, an upper bound) within 0.1% of Kaufman's exact F = -ln Z / beta on the 8x8 torus,
    the importance-weighted ln Z within 3 standard errors, and -ln Z_IW / beta within 0.1% as well."""
    log_z = kaufman_log_z(8, beta)
    f_exact = -log_z / beta
    n_steps = 600 if beta > 0.4 else 300  # the high-temperature phase is learned faster
    model, history = train_reverse_kl(
        MADE(64, 2, (64,), key=jax.random.key(40)),
        ising_l8,
        beta,
        key=jax.random.key(41),
        n_steps=n_steps,
        batch_size=256,
        optimizer=optax.adam(optax.cosine_decay_schedule(0.01, n_steps, 0.05)),
        beta_schedule=annealed_beta(beta, n_steps // 3),
        symmetrize=True,
        progress=False,
    )
    assert isinstance(model, Z2Symmetric) and history.free_energy.shape == (n_steps,)
    est = evaluate(model, ising_l8, beta, 10_000, key=jax.random.key(42))
    rel = (est.free_energy - f_exact) / abs(f_exact)
    print(
        f"\nbeta={beta}: F_q rel err {rel:.2e} (se {est.free_energy_stderr / abs(f_exact):.1e}), "
        f"lnZ_IW z {(est.log_z - log_z) / est.log_z_stderr:+.2f}, ESS {est.ess:.0f}/{est.n_samples}"
    )
    assert rel < 1e-3
    assert rel > -3 * est.free_energy_stderr / abs(f_exact)  # F_q >= F (variational bound)
    assert abs(est.log_z - log_z) < 3 * est.log_z_stderr
    assert abs(est.iw_free_energy - f_exact) / abs(f_exact) < 1e-3
    assert est.ess > 0.5 * est.n_samples


def test_straight_through_training_reduces_kl():
    ebm, _ = random_spin_glass(8, seed=50)
    energy = energy_from_ebm(ebm)
    f_exact = -exact_distribution(ebm, [Block(ebm.nodes)]).log_z
    model = MADE(8, 2, (16,), key=jax.random.key(51))
    kl_before = float(exact_variational_free_energy(model, energy, 1.0)) - f_exact
    model, _ = train_reverse_kl(
        model,
        energy,
        1.0,
        key=jax.random.key(52),
        n_steps=150,
        batch_size=64,
        learning_rate=0.02,
        estimator="straight_through",
        temperature=0.5,
        progress=False,
    )
    kl_after = float(exact_variational_free_energy(model, energy, 1.0)) - f_exact
    assert 0 <= kl_after < 0.25 * kl_before, (kl_before, kl_after)


# ------------------------------------------------------------------------- MH with a learned proposal


def _moment_z(samples: np.ndarray, pairs, m1, m2) -> tuple[float, float]:
    s = 2.0 * samples - 1.0
    n = s.shape[0]
    z1 = (s.mean(0) - m1) / np.sqrt((1 - m1**2) / n)
    corr = np.array([(s[:, i] * s[:, j]).mean() for i, j in pairs])
    z2 = (corr - m2) / np.sqrt((1 - m2**2) / n)
    return float(np.abs(z1).max()), float(np.abs(z2).max())


def test_mh_with_undertrained_proposal_is_exact():
    """A barely trained q (it misses much of p's mass) as an independent MH proposal on a frustrated 12-spin model.

    MH alone must leave p invariant (chains started from exact samples stay exact), and MH mixed with
    Gibbs sweeps must converge to p from q's samples; q's own samples are far off, so both checks have power.
    """
    ebm, pairs = random_spin_glass(12, seed=60, density=0.4, beta=0.9)
    energy = energy_from_ebm(ebm)  # the EBM's beta is inside: target exp(-energy), beta = 1
    exact = exact_distribution(ebm, [Block(ebm.nodes)])
    m1, m2 = spin_moments(exact, ebm.nodes, ebm.edges)
    q, _ = train_reverse_kl(
        MADE(12, 2, (16,), key=jax.random.key(61)),
        energy,
        1.0,
        key=jax.random.key(62),
        n_steps=20,
        batch_size=64,
        learning_rate=0.01,
        progress=False,
    )
    n_chains = 2000
    raw = _moment_z(np.asarray(q.sample(n_chains, key=jax.random.key(63))), pairs, m1, m2)
    assert max(raw) > 4 * Z_LIMIT, f"q should be visibly wrong for this test to have power, got z = {raw}"

    rng = np.random.default_rng(64)
    exact_init = exact.states[0][rng.choice(exact.probs.size, n_chains, p=exact.probs / exact.probs.sum())]
    runs = {
        "MH only, from p": {"init_states": jnp.asarray(exact_init, jnp.int32), "gibbs": None},
        "MH + Gibbs, from q": {"gibbs": GibbsKernel.for_ising(ebm)},
    }
    for label, options in runs.items():
        result = sample_with_proposal(
            q, energy, 1.0, key=jax.random.key(65), n_chains=n_chains, n_samples=1, n_warmup=100, **options
        )
        z1, z2 = _moment_z(np.asarray(result.samples[:, -1]), pairs, m1, m2)
        print(f"\n{label}: acceptance {float(result.acceptance_rate):.3f}, max z marginals {z1:.2f}, pairs {z2:.2f}")
        assert 0.05 < float(result.acceptance_rate) < 1.0, label
        assert z1 < Z_LIMIT and z2 < Z_LIMIT, (label, z1, z2)


# ---------------------------------------------------------------------------------------- bad input


def test_bad_input_errors():
    key = jax.random.key(0)
    for args in [(0, 2), (3, 1), (2.5, 2)]:
        with pytest.raises(HeatbathError):
            MADE(*args, key=key)
    with pytest.raises(HeatbathError, match="hidden"):
        MADE(3, 2, (0,), key=key)
    model = MADE(3, 3, (4,), key=key)
    with pytest.raises(HeatbathError, match="shape"):
        model.log_prob(jnp.zeros((2, 4), jnp.int32))
    with pytest.raises(HeatbathError, match="outside"):
        model.log_prob(jnp.array([[0, 1, 3]]))
    with pytest.raises(HeatbathError, match="integer"):
        model.log_prob(jnp.zeros((2, 3)))
    for n in (0, -1, 2.0):
        with pytest.raises(HeatbathError):
            model.sample(n, key=key)
    with pytest.raises(HeatbathError):
        spins_to_states(jnp.array([0, 1]))
    with pytest.raises(HeatbathError, match="symmetric"):
        SpinGlassEnergy(jnp.array([[0.0, 1.0], [0.0, 0.0]]))
    with pytest.raises(HeatbathError, match="two-state"):
        Z2Symmetric(model)
    spins = MADE(3, 2, (4,), key=key)
    energy = SpinGlassEnergy(jnp.zeros((3, 3)))
    nan_energy = lambda x: jnp.full(x.shape[0], jnp.nan)
    with pytest.raises(HeatbathError, match="NaN"):
        evaluate(spins, nan_energy, 1.0, 10, key=key)
    with pytest.raises(HeatbathError, match="one energy per row"):
        evaluate(spins, lambda x: jnp.zeros((x.shape[0], 2)), 1.0, 10, key=key)
    with pytest.raises(HeatbathError, match="n_samples"):
        evaluate(spins, energy, 1.0, 0, key=key)
    for beta in (0.0, -1.0, float("nan")):
        with pytest.raises(HeatbathError, match="beta"):
            evaluate(spins, energy, beta, 10, key=key)
    with pytest.raises(HeatbathError, match="estimator"):
        train_reverse_kl(spins, energy, 1.0, key=key, n_steps=1, estimator="magic", progress=False)
    with pytest.raises(HeatbathError, match="relaxed"):
        train_reverse_kl(spins, nan_energy, 1.0, key=key, n_steps=1, estimator="straight_through", progress=False)
    with pytest.raises(HeatbathError, match="units"):
        train_reverse_kl(MADE(4, 2, (4,), key=key), energy, 1.0, key=key, n_steps=1, progress=False)
    with pytest.raises(HeatbathError, match="diverged"):
        train_reverse_kl(spins, nan_energy, 1.0, key=key, n_steps=1, progress=False)
    with pytest.raises(HeatbathError, match="init_states"):
        sample_with_proposal(
            spins, energy, 1.0, key=key, n_chains=4, n_samples=1, init_states=jnp.zeros((4, 2), jnp.int32)
        )
    with pytest.raises(HeatbathError, match="n_chains"):
        sample_with_proposal(spins, energy, 1.0, key=key, n_chains=0, n_samples=1)
