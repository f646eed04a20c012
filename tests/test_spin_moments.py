"""`estimate_moments` through the sampling kernels (`models.spin_moments`): moments summed over pieces
of samples that continue one chain, free and clamped, against exact enumeration.

Error bars come from the spread of the per-chain estimates over independent chains, so the
correlation between samples of one chain is accounted for."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import heatbath.kernels.pieces as pieces
import heatbath.models.spin_moments as kernel_module
from heatbath import Block, BlockGibbsSpec, FactorSamplingProgram, SamplingSchedule, SpinNode
from heatbath.exact import exact_distribution, spin_moments
from heatbath.graphs import color_blocks
from heatbath.models import IsingSamplingProgram, SpinEBMFactor, SpinGibbsConditional, estimate_moments, hinton_init
from stats_helpers import Z_LIMIT
from test_ising_training import _model

CHAINS = 400
SCHEDULE = SamplingSchedule(20, 50, 3)


def _check(first, second, exact_first, exact_second):
    for got, exact in ((np.asarray(first), exact_first), (np.asarray(second), exact_second)):
        se = got.std(0, ddof=1) / np.sqrt(got.shape[0])
        z = np.abs(got.mean(0) - exact) / np.maximum(se, 1e-6)
        assert z.max() < Z_LIMIT, z


@pytest.fixture
def small_pieces(monkeypatch):
    """Seven samples a piece for eight free spins: the first piece, six more in the loop, one left over."""
    monkeypatch.setattr(pieces, "PIECE_ELEMENTS", 8 * 7)
    monkeypatch.setattr(pieces, "PIECE_TOTAL", 8 * 7)


def test_moments_over_several_pieces_match_exact(small_pieces):
    model, nodes, edges = _model(seed=3)
    blocks = color_blocks(model)
    program = IsingSamplingProgram(model, blocks, [])
    assert pieces.samples_per_piece(program, SCHEDULE) == 7  # 50 samples: 7 + 6 · 7 + 1
    init = hinton_init(jax.random.key(1), model, blocks, (CHAINS,))
    assert kernel_module.kernel_moments(jax.random.key(0), nodes, edges, program, SCHEDULE,
                                        [x[0] for x in init], []) is not None  # the kernels' path
    run = jax.jit(jax.vmap(lambda k, s: estimate_moments(k, nodes, edges, program, SCHEDULE, s, [])))
    first, second = run(jax.random.split(jax.random.key(2), CHAINS), init)
    assert first.shape == (CHAINS, len(nodes)) and second.shape == (CHAINS, len(edges))
    _check(first, second, *spin_moments(exact_distribution(model, [Block(nodes)]), nodes, edges))


def test_clamped_moments_read_the_clamped_values(small_pieces):
    model, nodes, edges = _model(seed=4)
    visible, hidden = nodes[:3], nodes[3:]
    free = color_blocks(model, nodes=hidden)
    program = IsingSamplingProgram(model, free, [Block(visible)])
    row = jnp.asarray([True, False, True])
    init = hinton_init(jax.random.key(5), model, free, (CHAINS,))
    run = jax.jit(jax.vmap(lambda k, s: estimate_moments(k, nodes, edges, program, SCHEDULE, s, [row])))
    first, second = run(jax.random.split(jax.random.key(6), CHAINS), init)
    np.testing.assert_array_equal(np.asarray(first)[:, :3], np.broadcast_to([1.0, -1.0, 1.0], (CHAINS, 3)))
    exact = exact_distribution(model, [Block(hidden)], clamped_blocks=[Block(visible)], clamped_state=[row])
    _check(first, second, *spin_moments(exact, nodes, edges))


def test_programs_the_kernels_do_not_run_keep_the_observer():
    a, b, c = SpinNode(), SpinNode(), SpinNode()
    triple = SpinEBMFactor([Block([a]), Block([b]), Block([c])], jnp.ones(1))  # order 3: no pairwise kernel
    program = FactorSamplingProgram(BlockGibbsSpec([Block([a]), Block([b]), Block([c])], []),
                                    [SpinGibbsConditional()] * 3, [triple], [])
    init = [jnp.zeros(1, bool)] * 3
    assert kernel_module.kernel_moments(jax.random.key(0), [a], [(a, b)], program, SCHEDULE, init, []) is None
    first, second = estimate_moments(jax.random.key(0), [a], [(a, b)], program, SamplingSchedule(2, 5, 1), init, [])
    assert first.shape == (1,) and second.shape == (1,)


@pytest.mark.parametrize("count", [1, 32, 33, 70])
def test_moment_sums_from_packed_bits_equal_direct_sums(count):
    """`spin_moment_sums` counts disagreements 32 samples a word (popcount of xor): the same sums as
    adding ±1 over the samples one by one, whatever the padding of the last word."""
    rng = np.random.default_rng(count)
    up = rng.random((count, 9)) < 0.4
    nodes = np.asarray([3, 0, 8, 3])
    heads, tails = np.asarray([0, 1, 2, 7, 4]), np.asarray([5, 1, 8, 6, 0])  # a node with itself: +P
    first, second = kernel_module.spin_moment_sums(jnp.asarray(up), nodes, heads, tails)
    s = np.where(up, 1.0, -1.0)
    np.testing.assert_array_equal(np.asarray(first), s[:, nodes].sum(0))
    np.testing.assert_array_equal(np.asarray(second), (s[:, heads] * s[:, tails]).sum(0))
    triple = kernel_module.differing_samples(kernel_module.pack_samples(jnp.asarray(up)), heads, tails, nodes[:1].repeat(5))
    np.testing.assert_array_equal(np.asarray(triple), (up[:, heads] ^ up[:, tails] ^ up[:, [3] * 5]).sum(0))
