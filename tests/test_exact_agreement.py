"""Block Gibbs samples match exact enumeration on random discrete models (spin, categorical, mixed).

Factors of order 1 to 3, free and clamped sampling, plain blocks and superblocks. Every check is a
z-test with error bars from the number of independent chains (see stats_helpers).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from heatbath import Block, BlockGibbsSpec, CategoricalNode, FactorSamplingProgram, SpinNode
from heatbath.exact import exact_distribution
from heatbath.graphs import color_blocks
from heatbath.models import (
    CategoricalEBMFactor,
    CategoricalGibbsConditional,
    DiscreteEBMFactor,
    FactorizedEBM,
    SpinEBMFactor,
    SpinGibbsConditional,
)
from stats_helpers import assert_matches_exact, final_states, random_init

N_CHAINS = 20_000
N_WARMUP = 80


def _tuples(rng, nodes, order, count):
    """`count` distinct node tuples of the given order (no node twice in a tuple)."""
    all_tuples = list(itertools.combinations(range(len(nodes)), order))
    pick = rng.choice(len(all_tuples), size=min(count, len(all_tuples)), replace=False)
    return [[nodes[i] for i in all_tuples[p]] for p in pick]


def _groups(tuples):
    return [Block(list(column)) for column in zip(*tuples)]


def spin_model(rng, n, scale=0.5):
    nodes = [SpinNode(f"s{i}") for i in range(n)]
    factors = []
    for order, count in ((1, n), (2, n + 3), (3, n // 2)):
        tuples = _tuples(rng, nodes, order, count)
        factors.append(SpinEBMFactor(_groups(tuples), jnp.asarray(rng.normal(0, scale, len(tuples)), jnp.float32)))
    return nodes, [], FactorizedEBM(factors)


def categorical_model(rng, n, k, scale=0.6):
    nodes = [CategoricalNode(f"c{i}") for i in range(n)]
    factors = []
    for order, count in ((1, n), (2, n), (3, 2)):
        tuples = _tuples(rng, nodes, order, count)
        w = rng.normal(0, scale, (len(tuples),) + (k,) * order)
        factors.append(CategoricalEBMFactor(_groups(tuples), jnp.asarray(w, jnp.float32)))
    return [], nodes, FactorizedEBM(factors)


def mixed_model(rng, n_spin, n_cat, k, scale=0.5):
    spins = [SpinNode(f"s{i}") for i in range(n_spin)]
    cats = [CategoricalNode(f"c{i}") for i in range(n_cat)]
    factors = [
        SpinEBMFactor([Block(spins)], jnp.asarray(rng.normal(0, scale, n_spin), jnp.float32)),
        CategoricalEBMFactor([Block(cats)], jnp.asarray(rng.normal(0, scale, (n_cat, k)), jnp.float32)),
    ]
    for n_s, n_c, count in ((1, 1, 5), (2, 1, 3), (1, 2, 3), (2, 0, 4)):
        s_t = _tuples(rng, spins, n_s, count)
        c_t = _tuples(rng, cats, n_c, count) if n_c else [[] for _ in s_t]
        m = min(len(s_t), len(c_t))
        w = rng.normal(0, scale, (m,) + (k,) * n_c)
        factors.append(DiscreteEBMFactor(_groups(s_t[:m]), _groups(c_t[:m]) if n_c else [], jnp.asarray(w, jnp.float32)))
    return spins, cats, FactorizedEBM(factors)


def _program(ebm, free, clamped, k):
    spec = BlockGibbsSpec(free, clamped, ebm.node_shape_dtypes)
    samplers = [
        SpinGibbsConditional() if isinstance(b.nodes[0], SpinNode) else CategoricalGibbsConditional(k)
        for b in spec.free_blocks
    ]
    return FactorSamplingProgram(spec, samplers, ebm.factors, [])


def _dtype(block):
    return jnp.bool_ if isinstance(block.nodes[0], SpinNode) else jnp.uint8


def _generic_final_states(program, init, blocks, clamp_values, seed):
    return final_states(program, init, blocks, n_warmup=N_WARMUP, seed=seed, clamp=clamp_values)


def _check(ebm, spins, cats, k, *, clamp_nodes=(), superblocks=False, seed=0, sample=_generic_final_states):
    """Colour the free nodes, clamp `clamp_nodes` to random values, draw one final state per chain with
    `sample(program, init, free_blocks, clamp_values, seed)` and compare with exact enumeration."""
    rng = np.random.default_rng(seed)
    free_nodes = [n for n in spins + cats if n not in set(clamp_nodes)]
    free = color_blocks(ebm, nodes=free_nodes, superblocks=superblocks)
    flat_free = [b for sb in free for b in (sb if isinstance(sb, tuple) else (sb,))]
    clamped = [Block([n for n in clamp_nodes if isinstance(n, t)]) for t in (SpinNode, CategoricalNode)]
    clamped = [b for b in clamped if len(b)]
    clamp_values = [
        jnp.asarray(rng.integers(0, 2 if isinstance(b.nodes[0], SpinNode) else k, len(b))).astype(_dtype(b))
        for b in clamped
    ]
    program = _program(ebm, free, clamped, k)
    n_states = [2 if isinstance(b.nodes[0], SpinNode) else k for b in flat_free]
    init = random_init(jax.random.key(seed + 1), flat_free, N_CHAINS, n_states, [_dtype(b) for b in flat_free])
    samples = sample(program, init, flat_free, clamp_values, seed + 2)
    exact = exact_distribution(ebm, flat_free, clamped_blocks=clamped, clamped_state=clamp_values)
    assert_matches_exact(samples, exact)


@pytest.mark.parametrize("n", [6, 12])
def test_spin_factors_up_to_order_3(n):
    spins, cats, ebm = spin_model(np.random.default_rng(n), n)
    _check(ebm, spins, cats, 2, seed=n)


def test_categorical_factors_up_to_order_3():
    spins, cats, ebm = categorical_model(np.random.default_rng(7), 6, 3)
    _check(ebm, spins, cats, 3, seed=7)


def test_mixed_spin_categorical_factors():
    spins, cats, ebm = mixed_model(np.random.default_rng(11), 5, 4, 3)
    _check(ebm, spins, cats, 3, seed=11)


def test_mixed_model_with_superblocks():
    spins, cats, ebm = mixed_model(np.random.default_rng(13), 5, 4, 3)
    _check(ebm, spins, cats, 3, superblocks=True, seed=13)


def test_spin_model_clamped():
    spins, cats, ebm = spin_model(np.random.default_rng(17), 12)
    _check(ebm, spins, cats, 2, clamp_nodes=spins[::3], seed=17)


def test_categorical_model_clamped():
    spins, cats, ebm = categorical_model(np.random.default_rng(19), 7, 3)
    _check(ebm, spins, cats, 3, clamp_nodes=cats[:2], seed=19)


def test_mixed_model_clamped_with_superblocks():
    spins, cats, ebm = mixed_model(np.random.default_rng(23), 6, 4, 3)
    _check(ebm, spins, cats, 3, clamp_nodes=[spins[0], cats[1]], superblocks=True, seed=23)
