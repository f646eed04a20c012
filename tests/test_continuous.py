"""Continuous and mixed models: Gaussian covariances against A⁻¹, Gaussian–Bernoulli moments against exact
enumeration (the Gaussian part integrated analytically), Metropolis-within-Gibbs against quadrature, bad input.

Error bars: Gaussian covariances use per-chain estimates (independent across chains), so their standard
error is the across-chain spread / sqrt(n_chains); the other tests use final states of independent chains.
"""

from __future__ import annotations

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from heatbath import (
    Block,
    BlockGibbsSpec,
    ContinuousNode,
    FactorSamplingProgram,
    HeatbathError,
    SamplingSchedule,
    SpinNode,
    sample_blocks,
    sample_states,
    sample_with_observation,
)
from heatbath.models import (
    ContinuousLinearFactor,
    ContinuousQuadraticFactor,
    GaussianBernoulliEBM,
    GaussianEBM,
    GaussianGibbsConditional,
    MetropolisGibbsConditional,
    SpinContinuousFactor,
    current_state_groups,
)
from optimised import OPTIMISED
from stats_helpers import Z_LIMIT, chi_square_z, final_states


# ---------------------------------------------------------------------------------------------
# Gaussian EBMs: covariance and mean
# ---------------------------------------------------------------------------------------------


def _grid_precision(rng, side: int):
    n = side * side
    edges = [(r * side + c, r * side + c + 1) for r in range(side) for c in range(side - 1)]
    edges += [(r * side + c, (r + 1) * side + c) for r in range(side - 1) for c in range(side)]
    return n, np.array(edges), rng.uniform(1.0, 2.0, n), rng.uniform(-0.25, 0.25, len(edges))


def _random_graph_precision(rng, n: int, p: float):
    iu, ju = np.triu_indices(n, 1)
    keep = rng.random(iu.size) < p
    edges = np.stack([iu[keep], ju[keep]], axis=1)
    w = rng.uniform(-0.3, 0.3, len(edges))
    row_sum = np.bincount(edges[:, 0], np.abs(w), n) + np.bincount(edges[:, 1], np.abs(w), n)
    return n, edges, row_sum + rng.uniform(0.5, 1.5, n), w  # diagonally dominant, so positive definite


def _per_chain_moments(ebm: GaussianEBM, mean: np.ndarray, *, n_chains: int, n_samples: int, seed: int):
    """Per chain: the sample mean of x and of (x-μ)(x-μ)ᵀ over `n_samples` sweeps (μ the exact mean)."""
    program = ebm.sampling_program()
    blocks = program.gibbs_spec.free_blocks
    index = {node: i for i, node in enumerate(ebm.nodes)}
    order = np.concatenate([[index[v] for v in b] for b in blocks])
    mu_blocks = jnp.asarray(mean[order], jnp.float32)
    n = len(order)

    def observe(program, state, clamp, carry, iteration):
        x = jnp.concatenate(state) - mu_blocks
        return (carry[0] + x, carry[1] + jnp.outer(x, x)), None

    carry0 = (jnp.zeros(n), jnp.zeros((n, n)))
    schedule = SamplingSchedule(20, n_samples, 1)

    def run(key):
        k_init, k_run = jax.random.split(key)
        init = [jax.random.normal(k, (len(b),)) for k, b in zip(jax.random.split(k_init, len(blocks)), blocks)]
        return sample_with_observation(k_run, program, schedule, init, [], carry0, observe)[0]

    s1, s2 = jax.jit(jax.vmap(run), compiler_options=OPTIMISED)(jax.random.split(jax.random.key(seed), n_chains))
    inverse = np.argsort(order)  # back to the model's node order
    s1 = np.asarray(s1)[:, inverse] / n_samples + mean
    s2 = np.asarray(s2)[:, inverse][:, :, inverse] / n_samples
    return s1, s2


@pytest.mark.parametrize("graph", ["grid", "random"])
def test_gaussian_covariance_matches_inverse_precision(graph):
    rng = np.random.default_rng(7 if graph == "grid" else 11)
    n, edges, diag, w = _grid_precision(rng, 10) if graph == "grid" else _random_graph_precision(rng, 50, 0.08)
    nodes = [ContinuousNode(i) for i in range(n)]
    mean = rng.normal(size=n)
    ebm = GaussianEBM(nodes, diagonal=diag, edges=edges, edge_weights=w, mean=mean)
    if graph == "random":
        assert len(ebm.free_blocks()) > 2  # not bipartite: exercises the general colouring
    a = ebm.precision_matrix()
    cov = np.linalg.inv(a)
    n_chains = 400
    means, second = _per_chain_moments(ebm, mean, n_chains=n_chains, n_samples=800, seed=3)

    err = second.mean(0) - cov
    se = second.std(0, ddof=1) / np.sqrt(n_chains)
    z = np.abs(err) / se
    assert z.max() < Z_LIMIT, f"covariance entry off by {z.max():.2f} standard errors"
    relative = np.abs(err).max() / np.abs(cov).max()
    assert relative < 0.01, f"max covariance error {relative:.4f} of max |cov| (limit 0.01)"

    mean_err = means.mean(0) - mean
    mean_z = np.abs(mean_err) / (means.std(0, ddof=1) / np.sqrt(n_chains))
    assert mean_z.max() < Z_LIMIT, f"mean off by {mean_z.max():.2f} standard errors"


def test_gaussian_energy_is_quadratic_form():
    rng = np.random.default_rng(0)
    a = np.array([[2.0, 0.4, 0.0], [0.4, 1.5, -0.3], [0.0, -0.3, 1.0]])
    mu = rng.normal(size=3)
    nodes = [ContinuousNode() for _ in range(3)]
    dense = GaussianEBM(nodes, precision=a, mean=mu)
    sparse = GaussianEBM(nodes, diagonal=np.diag(a), edges=[(nodes[0], nodes[1]), (nodes[1], nodes[2])],
                         edge_weights=np.array([0.4, -0.3]), mean=mu)
    x1, x2 = rng.normal(size=(2, 3)).astype(np.float32)
    for ebm in (dense, sparse):
        e1, e2 = (float(ebm.energy([jnp.asarray(x)], [Block(nodes)])) for x in (x1, x2))
        exact = lambda x: 0.5 * (x - mu) @ a @ (x - mu)
        np.testing.assert_allclose(e1 - e2, exact(x1) - exact(x2), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Gaussian–Bernoulli: exact by enumerating spins and integrating the Gaussian part
# ---------------------------------------------------------------------------------------------


def _small_mixed_model(rng, n_x: int, n_s: int):
    xs = [ContinuousNode(f"x{i}") for i in range(n_x)]
    ss = [SpinNode(f"s{k}") for k in range(n_s)]
    x_pairs = [(0, 1), (1, 2)]
    s_pairs = [(k, k + 1) for k in range(n_s - 1)] + [(0, n_s - 1)]
    m_pairs = [(k, i) for k in range(n_s) for i in range(n_x) if rng.random() < 0.6]
    p = dict(
        quadratic=rng.uniform(1.0, 2.0, n_x),
        linear=rng.normal(0, 0.5, n_x),
        continuous_weights=rng.uniform(-0.3, 0.3, len(x_pairs)),
        spin_biases=rng.normal(0, 0.3, n_s),
        spin_weights=rng.normal(0, 0.4, len(s_pairs)),
        mixed_weights=rng.normal(0, 0.5, len(m_pairs)),
    )
    ebm = GaussianBernoulliEBM(
        xs, ss,
        continuous_edges=[(xs[i], xs[j]) for i, j in x_pairs],
        spin_edges=[(ss[k], ss[l]) for k, l in s_pairs],
        mixed_edges=[(ss[k], xs[i]) for k, i in m_pairs],
        **{k: v.astype(np.float32) for k, v in p.items()},
    )
    a = np.diag(p["quadratic"])
    for (i, j), v in zip(x_pairs, p["continuous_weights"]):
        a[i, j] = a[j, i] = v
    w = np.zeros((n_s, n_x))
    for (k, i), v in zip(m_pairs, p["mixed_weights"]):
        w[k, i] += v
    exact = _exact_mixed(a, p["linear"], w, p["spin_biases"], s_pairs, p["spin_weights"])
    return ebm, xs, ss, exact


def _exact_mixed(a, b, w, c, s_pairs, j):
    """Spin probabilities and E[x | s] over all spin configurations (rows of `configs`, in {-1, +1})."""
    n_s = len(c)
    configs = np.array(list(itertools.product([-1.0, 1.0], repeat=n_s)))
    e_spin = -configs @ c - sum(v * configs[:, k] * configs[:, l] for (k, l), v in zip(s_pairs, j))
    h = b[None, :] + configs @ w  # linear coefficient of x for each configuration
    a_inv = np.linalg.inv(a)
    log_w = -e_spin + 0.5 * np.einsum("ci,ij,cj->c", h, a_inv, h)  # det A is the same for every s
    probs = np.exp(log_w - log_w.max())
    return configs, probs / probs.sum(), -h @ a_inv


@pytest.mark.parametrize("continuous", ["gaussian", "metropolis"])
def test_gaussian_bernoulli_matches_exact_enumeration(continuous):
    rng = np.random.default_rng(5)
    ebm, xs, ss, (configs, probs, cond_mean) = _small_mixed_model(rng, 3, 6)
    if continuous == "gaussian":
        program = ebm.sampling_program()
    else:  # f = 0: the Metropolis target is the same Gaussian conditional, reached by random-walk moves
        sampler = MetropolisGibbsConditional(lambda x, p: jnp.zeros_like(x), n_steps=3, n_adapt=30)
        program = ebm.sampling_program(continuous_sampler=sampler)
    blocks = program.gibbs_spec.free_blocks
    n_chains = 20000 if continuous == "gaussian" else 10000
    key = jax.random.key(1)
    init = [
        jax.random.bernoulli(k, 0.5, (n_chains, len(b))) if b.node_type is SpinNode else jnp.zeros((n_chains, len(b)))
        for k, b in zip(jax.random.split(key, len(blocks)), blocks)
    ]
    s, x = final_states(program, init, [Block(ss), Block(xs)], n_warmup=60 if continuous == "gaussian" else 150, seed=2)
    spins = np.where(s, 1.0, -1.0)

    index = ((spins > 0).astype(np.int64) * (2 ** np.arange(len(ss))[::-1])).sum(1)
    z = chi_square_z(np.bincount(index, minlength=probs.size), probs)
    assert z < Z_LIMIT, f"joint spin distribution differs from exact: chi-square z = {z:.2f}"

    checks = {
        "spin marginals": (spins, probs @ configs),
        "spin pair moments": (
            np.stack([spins[:, k] * spins[:, l] for k, l in itertools.combinations(range(len(ss)), 2)], 1),
            np.array([probs @ (configs[:, k] * configs[:, l]) for k, l in itertools.combinations(range(len(ss)), 2)]),
        ),
        "continuous means": (x, probs @ cond_mean),
        "spin-continuous moments": (
            (spins[:, :, None] * x[:, None, :]).reshape(n_chains, -1),
            np.einsum("c,ck,ci->ki", probs, configs, cond_mean).ravel(),
        ),
    }
    for what, (samples, exact) in checks.items():
        se = samples.std(0, ddof=1) / np.sqrt(n_chains)
        worst = np.max(np.abs(samples.mean(0) - exact) / se)
        assert worst < Z_LIMIT, f"{what}: off by {worst:.2f} standard errors"


def test_spin_continuous_factor_energy():
    x, s = ContinuousNode(), SpinNode()
    f = SpinContinuousFactor(np.array([0.7], np.float32), Block([s]), Block([x]))
    ebm = GaussianBernoulliEBM([x], [s], quadratic=np.ones(1, np.float32), mixed_edges=[(s, x)],
                               mixed_weights=np.array([0.7], np.float32))
    for spin, val in [(True, 1.5), (False, 1.5), (False, -2.0)]:
        state = [jnp.array([val], jnp.float32), jnp.array([spin])]
        sign = 1 if spin else -1
        np.testing.assert_allclose(float(ebm.energy(state, [Block([x]), Block([s])])), 0.5 * val**2 + 0.7 * sign * val,
                                   rtol=1e-6)
    assert len(f.to_interaction_groups()) == 2


# ---------------------------------------------------------------------------------------------
# Metropolis-within-Gibbs: a quartic double well against 1D quadrature
# ---------------------------------------------------------------------------------------------


def _quadrature_moments(energy, lo=-6.0, hi=6.0, n=200001):
    x = np.linspace(lo, hi, n)
    p = np.exp(-(energy(x) - energy(x).min()))
    p /= p.sum()
    m1 = p @ x
    return m1, p @ (x - m1) ** 2, p @ (x - m1) ** 4


def test_metropolis_double_well_matches_quadrature():
    a, b, c = 1.0, 2.0, 0.3  # E = a x^4 - b x^2 + c x: wells near ±1, barrier about 1
    nodes = [ContinuousNode() for _ in range(100)]
    block = Block(nodes)
    sampler = MetropolisGibbsConditional(lambda x, p: p["a"] * x**4 - p["b"] * x**2, {"a": a, "b": b}, n_steps=2)
    spec = BlockGibbsSpec([block], [])
    linear = ContinuousLinearFactor(np.full(len(nodes), c, np.float32), block)  # the c x term, as an interaction
    program = FactorSamplingProgram(spec, [sampler], [linear], current_state_groups([block]))
    n_chains = 64
    init = [jnp.zeros((n_chains, len(nodes)))]
    (x,) = final_states(program, init, [block], n_warmup=400, seed=4)
    x = x.ravel()  # nodes and chains are independent: n_chains * 100 draws

    mean, var, m4 = _quadrature_moments(lambda y: a * y**4 - b * y**2 + c * y)
    n = x.size
    z_mean = abs(x.mean() - mean) / np.sqrt(var / n)
    z_var = abs(np.mean((x - mean) ** 2) - var) / np.sqrt((m4 - var**2) / n)
    assert z_mean < Z_LIMIT, f"mean {x.mean():.4f} vs exact {mean:.4f} ({z_mean:.2f} standard errors)"
    assert z_var < Z_LIMIT, f"variance {np.var(x):.4f} vs exact {var:.4f} ({z_var:.2f} standard errors)"


def test_metropolis_step_size_adapts_then_freezes():
    nodes = [ContinuousNode() for _ in range(50)]
    block = Block(nodes)
    quad = ContinuousQuadraticFactor(np.full(50, 100.0, np.float32), block)  # sd 0.1: step 5 is far too big
    results = {}
    for adapt in (True, False):
        sampler = MetropolisGibbsConditional(lambda x, p: jnp.zeros_like(x), step_size=5.0, n_adapt=50, adapt=adapt)
        program = FactorSamplingProgram(BlockGibbsSpec([block], []), [sampler], [quad], current_state_groups([block]))
        state, sampler_states = [jnp.zeros(50)], [sampler.init()]
        step = jax.jit(lambda k, s, ss, program=program: sample_blocks(k, s, [], program, ss))
        logs = []
        for k in jax.random.split(jax.random.key(0), 80):
            state, sampler_states = step(k, state, sampler_states)
            logs.append(float(sampler_states[0].log_step))
        results[adapt] = (logs, sampler_states[0])
    logs, final = results[True]
    assert np.exp(logs[-1]) < 1.0, "the step size should shrink towards the 0.1 scale"
    assert logs[49] == logs[-1], "the step size must be frozen after n_adapt updates"
    assert int(final.n_updates) == 80 and float(final.n_proposed) == 80 * 50
    frozen_logs, _ = results[False]
    np.testing.assert_allclose(frozen_logs, np.log(5.0), rtol=1e-6)


def test_metropolis_with_gaussian_energy_matches_gaussian():
    """f = 0 plus quadratic and linear factors: the target is N(-b/a, 1/a)."""
    nodes = [ContinuousNode() for _ in range(100)]
    block = Block(nodes)
    factors = [ContinuousQuadraticFactor(np.full(100, 2.0, np.float32), block),
               ContinuousLinearFactor(np.full(100, -1.0, np.float32), block)]
    sampler = MetropolisGibbsConditional(lambda x, p: jnp.zeros_like(x))
    program = FactorSamplingProgram(BlockGibbsSpec([block], []), [sampler], factors, current_state_groups([block]))
    (x,) = final_states(program, [jnp.zeros((32, 100))], [block], n_warmup=300, seed=9)
    x = x.ravel()
    assert abs(x.mean() - 0.5) / np.sqrt(0.5 / x.size) < Z_LIMIT
    assert abs(np.mean((x - 0.5) ** 2) - 0.5) / np.sqrt(2 * 0.25 / x.size) < Z_LIMIT


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def test_bad_precision_matrices_raise():
    nodes = [ContinuousNode() for _ in range(2)]
    with pytest.raises(HeatbathError, match="not positive definite.*Increase the diagonal"):
        GaussianEBM(nodes, precision=np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(HeatbathError, match="symmetric"):
        GaussianEBM(nodes, precision=np.array([[1.0, 0.2], [0.1, 1.0]]))
    with pytest.raises(HeatbathError, match=r"A_ii must all be > 0"):
        GaussianEBM(nodes, diagonal=np.array([1.0, -1.0]))
    with pytest.raises(HeatbathError, match="NaN"):
        GaussianEBM(nodes, precision=np.array([[1.0, np.nan], [np.nan, 1.0]]))
    with pytest.raises(HeatbathError, match="NaN"):
        GaussianEBM(nodes, diagonal=np.ones(2), mean=np.array([0.0, np.nan]))
    with pytest.raises(HeatbathError, match=r"shape \(2,\)"):
        GaussianEBM(nodes, diagonal=np.ones(3))
    with pytest.raises(HeatbathError, match="non-positive precision"):
        ContinuousQuadraticFactor(np.array([1.0, 0.0], np.float32), Block(nodes))
    with pytest.raises(HeatbathError, match="floating point"):
        ContinuousLinearFactor(np.array([1, 2]), Block(nodes))
    s = SpinNode()
    with pytest.raises(HeatbathError, match="quadratic.*> 0"):
        GaussianBernoulliEBM(nodes, [s], quadratic=np.array([1.0, 0.0]))
    with pytest.raises(HeatbathError, match="swap"):
        GaussianBernoulliEBM(nodes, [s], quadratic=np.ones(2), mixed_edges=[(nodes[0], s)], mixed_weights=np.ones(1))


def test_wrong_dtype_and_missing_pieces_raise():
    nodes = [ContinuousNode() for _ in range(2)]
    with pytest.raises(HeatbathError, match="floating-point scalars"):
        GaussianEBM(nodes, diagonal=np.ones(2), node_shape_dtypes={ContinuousNode: jax.ShapeDtypeStruct((), jnp.bool_)}
                    ).sampling_program()
    block = Block(nodes)
    program = FactorSamplingProgram(
        BlockGibbsSpec([block], []), [MetropolisGibbsConditional(lambda x, p: x**2)],
        [ContinuousLinearFactor(np.ones(2, np.float32), block)],
    )
    with pytest.raises(HeatbathError, match="current_state_groups"):
        sample_blocks(jax.random.key(0), [jnp.zeros(2)], [], program, [program.samplers[0].init()])
    with pytest.raises(HeatbathError, match="step_size"):
        MetropolisGibbsConditional(lambda x, p: x, step_size=-1.0)
    with pytest.raises(HeatbathError, match="NaN"):
        MetropolisGibbsConditional(lambda x, p: x, {"a": jnp.array([np.nan])})
    # A continuous node with no quadratic term has no Gaussian conditional: a clear run-time error.
    program = FactorSamplingProgram(
        BlockGibbsSpec([block], []), [GaussianGibbsConditional()], [ContinuousLinearFactor(np.ones(2, np.float32), block)]
    )
    with pytest.raises(Exception, match="precision A_ii <= 0"):
        jax.block_until_ready(sample_blocks(jax.random.key(0), [jnp.zeros(2)], [], program, [None]))


# ---------------------------------------------------------------------------------------------
# The docs' "All of THRML" mixed grid, with the built-in types
# ---------------------------------------------------------------------------------------------


def _typed_skip_grid(rng, side: int, skips=(1, 3, 5), p_continuous: float = 0.5):
    """A side x side grid of randomly typed nodes (continuous or spin), joined at distances `skips` along rows and columns."""
    is_cont = rng.random((side, side)) < p_continuous
    grid = [[ContinuousNode((r, c)) if is_cont[r, c] else SpinNode((r, c)) for c in range(side)] for r in range(side)]
    pairs = [((r, c), (r + k, c)) for k in skips for r in range(side - k) for c in range(side)]
    pairs += [((r, c), (r, c + k)) for k in skips for r in range(side) for c in range(side - k)]
    return grid, [(grid[a[0]][a[1]], grid[b[0]][b[1]]) for a, b in pairs]


def test_all_of_thrml_mixed_grid_with_builtin_types():
    """The docs' mixed grid (12x12, skips 1, 3, 5; variances in [2, 3], continuous couplings ±0.1, N(0, 1) elsewhere).

    With the spins clamped the continuous part is exactly Gaussian with precision A, so, as in the docs'
    Gaussian check, the covariances of neighbouring continuous nodes must match A⁻¹ (error below 1% of the
    largest, and within error bars), and the means must match -A⁻¹ (b + Wᵀs).
    """
    rng = np.random.default_rng(4242)
    grid, edges = _typed_skip_grid(rng, 12)
    nodes = [n for row in grid for n in row]
    xs = [n for n in nodes if isinstance(n, ContinuousNode)]
    ss = [n for n in nodes if isinstance(n, SpinNode)]
    cc = [e for e in edges if all(isinstance(n, ContinuousNode) for n in e)]
    sss = [e for e in edges if all(isinstance(n, SpinNode) for n in e)]
    sc = [e if isinstance(e[0], SpinNode) else e[::-1] for e in edges if e not in cc and e not in sss]
    f32 = lambda a: np.asarray(a, np.float32)
    quadratic = 1 / rng.uniform(2, 3, len(xs))
    params = dict(
        quadratic=f32(quadratic), linear=f32(rng.normal(size=len(xs))),
        continuous_weights=f32(rng.uniform(-0.1, 0.1, len(cc))), spin_biases=f32(rng.normal(size=len(ss))),
        spin_weights=f32(rng.normal(size=len(sss))), mixed_weights=f32(rng.normal(size=len(sc))),
    )
    ebm = GaussianBernoulliEBM(xs, ss, continuous_edges=cc, spin_edges=sss, mixed_edges=sc, **params)

    # unclamped: automatic superblocks mix both types in a colour and the sampler runs
    free = ebm.free_blocks()
    assert any(len({b.node_type for b in colour}) == 2 for colour in free)
    program = ebm.sampling_program()
    init = [jnp.zeros(len(b), bool) if b.node_type is SpinNode else jnp.zeros(len(b)) for b in program.gibbs_spec.free_blocks]
    states, _ = sample_blocks(jax.random.key(0), init, [], program, [None] * len(init))
    assert all(np.all(np.isfinite(np.asarray(s, np.float32))) for s in states)

    # clamped spins: the continuous nodes are Gaussian with precision A and linear term h = b + Wᵀs
    spins = rng.random(len(ss)) < 0.5
    x_index, s_index = {n: i for i, n in enumerate(xs)}, {n: i for i, n in enumerate(ss)}
    a = np.diag(quadratic)
    for (u, v), w in zip(cc, params["continuous_weights"]):
        a[x_index[u], x_index[v]] = a[x_index[v], x_index[u]] = w
    h = params["linear"].astype(np.float64)
    for (s, x), w in zip(sc, params["mixed_weights"]):
        h[x_index[x]] += w * (1.0 if spins[s_index[s]] else -1.0)
    cov = np.linalg.inv(a)
    mean = -cov @ h

    program = ebm.sampling_program(clamped_blocks=[Block(ss)])
    blocks = program.gibbs_spec.free_blocks
    order = np.concatenate([[x_index[n] for n in b] for b in blocks])
    u = np.array([x_index[p] for p, _ in cc])
    v = np.array([x_index[q] for _, q in cc])
    pos = np.argsort(order)  # model index -> position in the concatenated block state
    mu = jnp.asarray(mean[order], jnp.float32)

    def observe(program, state, clamp, carry, iteration):
        x = jnp.concatenate(state) - mu
        return (carry[0] + x, carry[1] + x[pos[u]] * x[pos[v]]), None

    n_chains, n_samples = 400, 1000
    schedule = SamplingSchedule(10, n_samples, 1)
    carry0 = (jnp.zeros(len(xs)), jnp.zeros(len(u)))

    def run(key):
        init = [jnp.asarray(mean[[x_index[n] for n in b]], jnp.float32) for b in blocks]
        return sample_with_observation(key, program, schedule, init, [jnp.asarray(spins)], carry0, observe)[0]

    s1, s2 = jax.jit(jax.vmap(run))(jax.random.split(jax.random.key(1), n_chains))
    s1 = np.asarray(s1)[:, pos] / n_samples
    s2 = np.asarray(s2) / n_samples
    real = cov[u, v]
    err = s2.mean(0) - real
    z = np.abs(err) / (s2.std(0, ddof=1) / np.sqrt(n_chains))
    assert z.max() < Z_LIMIT, f"neighbour covariance off by {z.max():.2f} standard errors"
    error = np.max(np.abs(err)) / np.max(np.abs(cov))
    assert error < 0.01, f"max neighbour covariance error {error:.4f} of max |cov|"
    z_mean = np.abs(s1.mean(0)) / (s1.std(0, ddof=1) / np.sqrt(n_chains))
    assert z_mean.max() < Z_LIMIT, f"clamped-spin conditional mean off by {z_mean.max():.2f} standard errors"


def test_all_of_thrml_gaussian_part_with_builtin_types():
    """The docs' first part (5x5 grid Gaussian, their random A and mean) with GaussianEBM instead of
    hand-written factors and sampler. The docs check the largest edge-covariance error relative to the
    largest edge covariance (< 0.01 with 10^7 sweeps; test_thrml_examples runs their script so). Here
    each edge's covariance is within Z_LIMIT standard errors of the exact one, the errors taken from the
    spread of the 1,000 independent chains' own estimates (which holds the autocorrelation), on a fifth
    of the docs' sweeps: at 10,000 samples a chain the relative error was 0.0043 (largest z 2.1), at
    1,000 it was 0.016 (largest z 1.9)."""
    from heatbath import MomentAccumulatorObserver, sample_with_observation
    from heatbath.graphs import lattice_2d

    lattice = lattice_2d(5, periodic=False, node_type=ContinuousNode)
    nodes, (u, v) = lattice.nodes, lattice.edge_index.T
    key = jax.random.key(4242)
    key, k1, k2, k3 = jax.random.split(key, 4)
    diag = np.asarray(jax.random.uniform(k1, (25,), minval=1, maxval=2), np.float64)
    off = np.asarray(jax.random.uniform(k2, (len(u),), minval=-0.25, maxval=0.25), np.float64)
    mean = np.asarray(jax.random.normal(k3, (25,)), np.float64)
    model = GaussianEBM(nodes, diagonal=diag, edges=lattice.edges, edge_weights=off, mean=mean)
    program = model.sampling_program(free_blocks=lattice.blocks())
    edges = [(nodes[a], nodes[b]) for a, b in zip(u, v)]
    observer = MomentAccumulatorObserver([[(a,) for a, _ in edges], [(b,) for _, b in edges], edges])
    n_chains, schedule = 1000, SamplingSchedule(n_warmup=20, n_samples=2000, steps_per_sample=1)
    init = [jnp.zeros((n_chains, len(b)), jnp.float32) for b in program.gibbs_spec.free_blocks]
    keys = jax.random.split(key, n_chains)
    sample = jax.vmap(lambda k, s: sample_with_observation(k, program, schedule, s, [], observer.init(), observer))
    moments, _ = jax.jit(sample, compiler_options=OPTIMISED)(keys, init)  # 2 x 10^6 sweeps: see optimised.py
    per_chain = [np.asarray(x, np.float64) / schedule.n_samples for x in moments]
    m = [x.mean(0) for x in per_chain]
    covariances = m[2] - m[0] * m[1]
    standard_error = (per_chain[2] - per_chain[0] * per_chain[1]).std(0, ddof=1) / np.sqrt(n_chains)
    real = np.linalg.inv(model.precision_matrix())[u, v]
    z = np.abs(covariances - real) / standard_error
    assert z.max() < Z_LIMIT, f"edge covariance off by {z.max():.2f} standard errors"
    assert np.max(np.abs(real - covariances)) / np.abs(np.max(real)) < 0.03  # the docs' measure, coarse at this size


def test_eager_calls_of_the_generic_loop_compile_once(monkeypatch):
    """An eager `sample_states` call of a program that no kernel runs (here a Gaussian) is one compiled
    call kept per program structure: a second call with another key traces nothing, and each call
    gives the samples of the same call under `jax.jit`, also for a program with other weights."""
    from heatbath import block_sampling
    from heatbath.graphs import lattice_2d
    from heatbath.kernels import dispatch

    monkeypatch.setattr(dispatch, "_GENERIC_CALLS", {})
    traced = []
    generic = block_sampling._sample_states_generic
    monkeypatch.setattr(block_sampling, "_sample_states_generic", lambda *a: traced.append(1) or generic(*a))
    lattice = lattice_2d(4, periodic=False, node_type=ContinuousNode)
    rng = np.random.default_rng(5)
    blocks = lattice.blocks()
    schedule = SamplingSchedule(5, 3, 2)

    def program_with_mean(mean):
        model = GaussianEBM(lattice.nodes, diagonal=rng.uniform(1, 2, 16), edges=lattice.edges,
                            edge_weights=np.full(len(lattice.edges), 0.2), mean=mean)
        return model.sampling_program(free_blocks=blocks)

    init = [jnp.zeros((len(b),), jnp.float32) for b in blocks]
    program = program_with_mean(np.zeros(16))
    eager = [sample_states(jax.random.key(seed), program, schedule, init, [], blocks[:1]) for seed in (0, 1)]
    assert len(traced) == 1  # the second call reused the compiled one
    assert not np.array_equal(np.asarray(eager[0][0]), np.asarray(eager[1][0]))  # keys matter
    shifted = program_with_mean(np.full(16, 50.0))
    moved = sample_states(jax.random.key(1), shifted, schedule, init, [], blocks[:1])
    assert np.asarray(moved[0]).mean() > 40  # the samples follow the new program's weights
    assert len(traced) == 1  # a model rebuilt from the same nodes has the same structure
    # (the program as an argument of the jit, as in the eager call: closed over, its weights would be
    # constants that XLA folds, which can move the last bit of a draw)
    run = eqx.filter_jit(lambda k, prog: sample_states(k, prog, schedule, init, [], blocks[:1]))
    for prog, got in ((program, eager[1]), (shifted, moved)):
        np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(run(jax.random.key(1), prog)[0]))


def test_eager_vmaps_of_the_generic_loop_compile_once(monkeypatch):
    """THRML's documentation vmaps `sample_states` without `jit` for continuous and mixed models: such
    an eager vmap runs one compiled vmap of the generic loop, kept per program structure (a second
    call traces nothing), with the samples of `jax.jit(jax.vmap(...))`. Under `jax.grad` the loop
    runs as before (the compiled call would hide the weights' derivatives)."""
    from heatbath import block_sampling
    from heatbath.graphs import lattice_2d
    from heatbath.kernels import dispatch

    monkeypatch.setattr(dispatch, "_GENERIC_CALLS", {})
    traced = []
    generic = block_sampling._sample_states_generic
    monkeypatch.setattr(block_sampling, "_sample_states_generic", lambda *a: traced.append(1) or generic(*a))
    lattice = lattice_2d(4, periodic=False, node_type=ContinuousNode)
    blocks = lattice.blocks()
    model = GaussianEBM(lattice.nodes, diagonal=np.full(16, 1.5), edges=lattice.edges,
                        edge_weights=np.full(len(lattice.edges), 0.2), mean=np.linspace(-1, 1, 16))
    program = model.sampling_program(free_blocks=blocks)
    schedule = SamplingSchedule(4, 3, 1)
    init = [jnp.zeros((6, len(b)), jnp.float32) for b in blocks]
    run = lambda k, s: sample_states(k, program, schedule, s, [], blocks)  # noqa: E731
    keys = [jax.random.split(jax.random.key(seed), 6) for seed in (0, 1)]
    eager = [jax.vmap(run)(k, init) for k in keys]
    assert len(traced) == 1
    reference = jax.jit(jax.vmap(run))(keys[1], init)
    for a, b in zip(eager[1], reference):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(eager[0][0]), np.asarray(eager[1][0]))
    assert not np.array_equal(np.asarray(eager[1][0][0]), np.asarray(eager[1][0][1]))  # chains differ

    def mean_sample(scale):  # a gradient through the samples (the draw is a reparameterisation)
        scaled = jax.tree.map(lambda x: x * scale if eqx.is_inexact_array(x) else x, init)
        return jnp.mean(jax.vmap(run)(keys[0], scaled)[0])

    assert np.isfinite(float(jax.grad(mean_sample)(1.0)))



def test_eager_vmaps_with_an_observer_compile_once(monkeypatch):
    """`sample_with_observation` under an eager vmap (THRML's Gaussian moments example) runs one
    compiled vmap per program structure, schedule and observer structure: a second call, or an equal
    observer, traces nothing, and the moments are those of the same call compiled with the program as
    an argument. An observer of other moments compiles anew."""
    from heatbath import MomentAccumulatorObserver, block_sampling
    from heatbath.graphs import lattice_2d
    from heatbath.kernels import dispatch

    monkeypatch.setattr(dispatch, "_GENERIC_CALLS", {})
    traced = []
    generic = block_sampling._sample_with_observation_generic
    monkeypatch.setattr(block_sampling, "_sample_with_observation_generic", lambda *a: traced.append(1) or generic(*a))
    lattice = lattice_2d(3, periodic=False, node_type=ContinuousNode)
    nodes, (u, v) = lattice.nodes, lattice.edge_index.T
    model = GaussianEBM(nodes, diagonal=np.full(9, 1.5), edges=lattice.edges,
                        edge_weights=np.full(len(lattice.edges), -0.3), mean=np.linspace(-1, 1, 9))
    program = model.sampling_program(free_blocks=lattice.blocks())
    edges = [(nodes[a], nodes[b]) for a, b in zip(u, v)]
    observer = MomentAccumulatorObserver([[(a,) for a, _ in edges], edges])
    schedule = SamplingSchedule(5, 20, 1)
    init = [jnp.zeros((4, len(b)), jnp.float32) for b in program.gibbs_spec.free_blocks]
    keys = jax.random.split(jax.random.key(3), 4)

    def run(prog, obs):
        return lambda k, s: sample_with_observation(k, prog, schedule, s, [], obs.init(), obs)

    eager = [jax.vmap(run(program, observer))(keys, init) for _ in range(2)]
    assert len(traced) == 1
    reference = eqx.filter_jit(lambda prog, k, s: jax.vmap(run(prog, observer))(k, s))(program, keys, init)
    for a, b in zip(jax.tree.leaves(eager[1]), jax.tree.leaves(reference)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert len(traced) == 2  # the reference's own trace
    same = MomentAccumulatorObserver([[(a,) for a, _ in edges], edges])  # equal structure: the same call
    jax.vmap(run(program, same))(keys, init)
    assert len(traced) == 2
    other = MomentAccumulatorObserver([edges])  # other moments: a new call
    jax.vmap(run(program, other))(keys, init)
    assert len(traced) == 3


def test_a_user_observer_with_a_list_field_reuses_its_compiled_call(monkeypatch):
    """A user-written observer (an equinox module with a static list field) gets
    one compiled call for eager calls too; its samples are the observer's."""
    from heatbath import block_sampling
    from heatbath.graphs import lattice_2d
    from heatbath.kernels import dispatch

    class SumObserver(eqx.Module):
        tags: list = eqx.field(static=True)

        def init(self):
            return jnp.zeros(())

        def __call__(self, program, free, clamp, carry, iteration):
            return carry + jnp.sum(free[0]), jnp.sum(free[0])

    monkeypatch.setattr(dispatch, "_GENERIC_CALLS", {})
    traced = []
    generic = block_sampling._sample_with_observation_generic
    monkeypatch.setattr(block_sampling, "_sample_with_observation_generic", lambda *a: traced.append(1) or generic(*a))
    lattice = lattice_2d(3, periodic=False, node_type=ContinuousNode)
    model = GaussianEBM(lattice.nodes, diagonal=np.full(9, 1.5), edges=lattice.edges,
                        edge_weights=np.full(len(lattice.edges), -0.3), mean=np.zeros(9))
    program = model.sampling_program(free_blocks=lattice.blocks())
    observer = SumObserver(["a list"])
    init = [jnp.zeros((len(b),), jnp.float32) for b in program.gibbs_spec.free_blocks]
    schedule = SamplingSchedule(2, 4, 1)
    runs = [sample_with_observation(jax.random.key(i), program, schedule, init, [], observer.init(), observer)
            for i in (0, 1)]
    assert len(traced) == 1 and runs[0][1].shape == (4,)
    np.testing.assert_allclose(runs[0][0], runs[0][1].sum(), rtol=1e-6)  # the carry sums what it observed
    assert not np.array_equal(np.asarray(runs[0][1]), np.asarray(runs[1][1]))
