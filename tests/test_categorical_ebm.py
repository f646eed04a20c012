"""CategoricalEBM / CategoricalSamplingProgram (the seed's imports) against exact enumeration."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from heatbath import CategoricalNode
from heatbath.block_management import Block
from heatbath.block_sampling import SamplingSchedule, sample_states
from heatbath.exact import exact_distribution
from heatbath.models.discrete_ebm import CategoricalEBM
from heatbath.sampling_programs import CategoricalSamplingProgram, IsingSamplingProgram  # noqa: F401 (re-export)
from stats_helpers import assert_matches_exact, final_states


def test_single_node_benford_style_model_samples_softmax_of_biases():
    node = CategoricalNode(num_states=9)
    biases = jnp.log(jnp.log10(1.0 + 1.0 / jnp.arange(1, 10)))  # softmax(biases) is Benford's law
    model = CategoricalEBM([node], biases=biases)
    free_blocks = [Block([node])]
    program = CategoricalSamplingProgram(model, free_blocks, [])
    n = 100_000
    schedule = SamplingSchedule(n_warmup=0, n_samples=n, steps_per_sample=1)
    init_state = [jnp.zeros((1,), dtype=jnp.uint8)]
    samples = sample_states(jax.random.key(42), program, schedule, init_state, [], free_blocks)
    assert samples[0].shape == (n, 1) and samples[0].dtype == jnp.uint8
    p = np.log10(1 + 1 / np.arange(1, 10))
    p_hat = np.bincount(np.asarray(samples[0][:, 0]), minlength=9) / n
    # single node, no neighbours: every sweep is an independent draw
    assert np.all(np.abs(p_hat - p) / np.sqrt(p * (1 - p) / n) < 5)


def _potts(k, rng, n=5):
    nodes = [CategoricalNode(i) for i in range(n)]
    edges = [(nodes[i], nodes[(i + 1) % n]) for i in range(n)] + [(nodes[0], nodes[2])]
    biases = rng.normal(0, 0.5, (n, k))
    weights = rng.normal(0, 0.5, (len(edges), k, k))
    return nodes, CategoricalEBM(nodes, biases=biases, edges=edges, weights=weights, beta=0.9)


def test_potts_ring_matches_exact():
    nodes, model = _potts(4, np.random.default_rng(0))
    blocks = [Block([nodes[0], nodes[3]]), Block([nodes[1], nodes[4]]), Block([nodes[2]])]
    program = CategoricalSamplingProgram(model, blocks, [])
    n_chains = 20_000
    init = [jnp.zeros((n_chains, len(b)), jnp.uint8) for b in blocks]
    samples = final_states(program, init, blocks, n_warmup=60, seed=1)
    assert_matches_exact(samples, exact_distribution(model, blocks))


def test_many_categories_widen_the_state_dtype():
    k = 300
    a, b = CategoricalNode(), CategoricalNode()
    rng = np.random.default_rng(2)
    model = CategoricalEBM([a, b], biases=rng.normal(0, 1, (2, k)), edges=[(a, b)], weights=rng.normal(0, 0.5, (1, k, k)))
    assert model.node_shape_dtypes[CategoricalNode].dtype == jnp.uint16
    blocks = [Block([a]), Block([b])]
    program = CategoricalSamplingProgram(model, blocks, [])
    n_chains = 4000
    init = [jnp.full((n_chains, 1), k - 1, jnp.uint16) for _ in blocks]
    samples = final_states(program, init, blocks, n_warmup=20, seed=3)
    assert samples[0].dtype == np.uint16 and samples[0].max() >= 256  # not truncated to uint8
    exact = exact_distribution(model, blocks)
    mean_exact = [float(np.sum(exact.probs * s[:, 0])) for s in exact.states]
    var_exact = [float(np.sum(exact.probs * s[:, 0].astype(float) ** 2)) - m**2 for s, m in zip(exact.states, mean_exact)]
    for s, m, v in zip(samples, mean_exact, var_exact):
        assert abs(s.mean() - m) / np.sqrt(v / n_chains) < 5


def test_categorical_ebm_energy_matches_definition():
    nodes, model = _potts(3, np.random.default_rng(4), n=4)
    state = jnp.array([0, 2, 1, 1], jnp.uint8)
    e = model.energy([state], [Block(nodes)])
    b, w = np.asarray(model.biases), np.asarray(model.weights)
    index = {n: i for i, n in enumerate(nodes)}
    expected = b[np.arange(4), np.asarray(state)].sum()
    for (u, v), wm in zip(model.edges, w):
        expected += wm[state[index[u]], state[index[v]]]
    np.testing.assert_allclose(float(e), -0.9 * expected, rtol=1e-5)


def test_categorical_ebm_single_node_biases_may_be_a_vector():
    node = CategoricalNode()
    model = CategoricalEBM([node], biases=jnp.zeros(5))
    assert model.biases.shape == (1, 5) and model.n_categories == 5
