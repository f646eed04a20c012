"""Programs whose free blocks read no free block sample every observed sweep side by side.

Then a sweep's result depends on its own random words and the clamped blocks only (the Benford
experiment's single categorical node; hidden units given clamped visible units), so the pairwise
kernels run the observed sweeps as copies of the chains instead of looping over sweeps. The samples
must be those of the sweep loop, bit for bit, and follow the exact conditional distribution.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from heatbath import Block, BlockGibbsSpec, CategoricalNode, FactorSamplingProgram, SamplingSchedule, SpinNode, sample_states
from heatbath.kernels import pairwise_sweep
from heatbath.kernels.batched import sample_states_batched
from heatbath.kernels.pairwise_tables import pairwise_tables
from heatbath.kernels.pallas_backend import pallas_available
from heatbath.models import CategoricalEBMFactor, SpinEBMFactor
from heatbath.models.discrete_ebm import CategoricalGibbsConditional, SpinGibbsConditional

K = 4  # categories of the categorical models
# jax.numpy everywhere; on CUDA GPUs also the kernels "auto" picks (table or Pallas) and the Pallas ones
METHODS = ["gather"] + (["auto", "pallas"] if pallas_available() else [])


def _bipartite(kind: str, n_free: int, n_clamped: int, seed: int):
    """Free nodes coupled only to clamped nodes (each free node to two of them), with biases: free
    blocks read no free block. Returns the program, the free and clamped blocks."""
    rng = np.random.default_rng(seed)
    make = SpinNode if kind == "spin" else CategoricalNode
    free = [make(f"f{i}") for i in range(n_free)]
    clamped = [make(f"c{j}") for j in range(n_clamped)]
    pairs = [(f, clamped[(i + d) % n_clamped]) for i, f in enumerate(free) for d in (0, 1)]
    heads, tails = Block([p[0] for p in pairs]), Block([p[1] for p in pairs])
    if kind == "spin":
        factors = [SpinEBMFactor([Block(free)], jnp.asarray(rng.normal(0, 1, n_free), jnp.float32)),
                   SpinEBMFactor([heads, tails], jnp.asarray(rng.normal(0, 0.8, len(pairs)), jnp.float32))]
        sampler = SpinGibbsConditional()
    else:
        factors = [CategoricalEBMFactor([Block(free)], jnp.asarray(rng.normal(0, 1, (n_free, K)), jnp.float32)),
                   CategoricalEBMFactor([heads, tails], jnp.asarray(rng.normal(0, 0.8, (len(pairs), K, K)), jnp.float32))]
        sampler = CategoricalGibbsConditional(K)
    half = n_free // 2
    free_blocks = [Block(free[:half]), Block(free[half:])]  # two blocks, neither reading the other
    spec = BlockGibbsSpec(free_blocks, [Block(clamped)])
    return FactorSamplingProgram(spec, [sampler, sampler], factors, []), free_blocks, Block(clamped)


def _states(kind: str, rng, chains: int, blocks):
    if kind == "spin":
        return [jnp.asarray(rng.random((chains, len(b))) < 0.5) for b in blocks]
    return [jnp.asarray(rng.integers(0, K, (chains, len(b))), jnp.uint8) for b in blocks]


def _both_ways(monkeypatch, run):
    """`run()` with side-by-side sweeps, then with the sweep loop (compiled calls are dropped in
    between: they were traced with the other choice)."""
    jax.clear_caches()
    fast = run()
    with monkeypatch.context() as patch:
        patch.setattr(pairwise_sweep, "reads_no_free_block", lambda tables: False)
        jax.clear_caches()
        loop = run()
    jax.clear_caches()
    return fast, loop


def test_only_programs_without_free_to_free_reads_qualify():
    program, _, _ = _bipartite("spin", 6, 3, 0)
    assert pairwise_sweep.reads_no_free_block(pairwise_tables(program))
    a, b = SpinNode(), SpinNode()  # two free blocks coupled to each other
    coupled = FactorSamplingProgram(BlockGibbsSpec([Block([a]), Block([b])], []), [SpinGibbsConditional()] * 2,
                                    [SpinEBMFactor([Block([a]), Block([b])], jnp.ones(1))], [])
    assert not pairwise_sweep.reads_no_free_block(pairwise_tables(coupled))


def test_sweeps_per_batch_fit_the_limit_and_every_kernel_tile():
    granule = pairwise_sweep.CHAIN_GRANULE
    for n, elements in [(1, 1), (3, 1), (100, 1), (128, 1), (129, 1), (100_000, 1), (10**7, 1), (100, 10**5),
                        (100, 10**8), (1000, 2000), (5000, 3000)]:
        m = pairwise_sweep._sweeps_per_batch(n, elements)
        assert m >= 1 and (m & (m - 1) == 0 if m <= granule else m % granule == 0), (n, elements, m)
        assert m * elements <= max(pairwise_sweep.INDEPENDENT_BATCH_ELEMENTS, elements), (n, elements, m)
        batches = -(-n // m)
        assert batches * m - n < max(m, batches * granule), (n, elements, m)  # padding stays small


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["spin", "categorical"])
@pytest.mark.parametrize("schedule", [SamplingSchedule(0, 300, 1), SamplingSchedule(3, 40, 3), SamplingSchedule(2, 1, 5)])
def test_side_by_side_sweeps_give_the_sweep_loops_samples(monkeypatch, kind, schedule, method):
    program, free_blocks, clamped = _bipartite(kind, 10, 4, 1)
    rng = np.random.default_rng(2)
    chains = 5
    init = _states(kind, rng, chains, free_blocks)
    clamp = _states(kind, rng, chains, [clamped])
    observe = free_blocks + [clamped]

    def run():
        out = sample_states_batched(jax.random.key(3), program, schedule, init, clamp, observe, method=method)
        return [np.asarray(x) for x in out]

    fast, loop = _both_ways(monkeypatch, run)
    for f, s in zip(fast, loop):
        assert f.shape == (chains, schedule.n_samples, s.shape[-1])
        np.testing.assert_array_equal(f, s)
    np.testing.assert_array_equal(fast[-1], np.broadcast_to(np.asarray(clamp[0])[:, None], fast[-1].shape))


def test_several_batches_give_the_same_samples(monkeypatch):
    program, free_blocks, clamped = _bipartite("categorical", 10, 4, 4)
    rng = np.random.default_rng(5)
    init, clamp = _states("categorical", rng, 3, free_blocks), _states("categorical", rng, 3, [clamped])
    schedule = SamplingSchedule(1, 700, 2)

    def run():
        return [np.asarray(x) for x in sample_states_batched(jax.random.key(6), program, schedule, init, clamp, free_blocks)]

    monkeypatch.setattr(pairwise_sweep, "INDEPENDENT_BATCH_ELEMENTS", 128 * 3 * 16)  # 128 sweeps a batch: 6 batches
    assert pairwise_sweep._sweeps_per_batch(700, 3 * 14) == 128  # 3 chains, 14 rows
    fast, loop = _both_ways(monkeypatch, run)
    for f, s in zip(fast, loop):
        np.testing.assert_array_equal(f, s)
    monkeypatch.setattr(pairwise_sweep, "INDEPENDENT_BATCH_ELEMENTS", 3 * 16 * 5)  # 4 sweeps a batch
    jax.clear_caches()
    for f, s in zip(run(), loop):
        np.testing.assert_array_equal(f, s)


def test_one_categorical_node_samples_its_softmax(monkeypatch):
    """The Benford experiment's call (one chain, no warm-up, eager): sample 0 is the initial state,
    the others are independent draws from softmax(logits)."""
    node = CategoricalNode()
    logits = jnp.asarray(np.log10(1 + 1 / np.arange(1, 10)) * 3, jnp.float32)
    blocks = [Block([node])]
    program = FactorSamplingProgram(BlockGibbsSpec(blocks, []), [CategoricalGibbsConditional(9)],
                                    [CategoricalEBMFactor(blocks, logits[None])], [])
    n = 40_000
    schedule = SamplingSchedule(n_warmup=0, n_samples=n, steps_per_sample=1)
    init = [jnp.full((1,), 4, jnp.uint8)]

    def run():
        return np.asarray(sample_states(jax.random.key(7), program, schedule, init, [], blocks)[0])[:, 0]

    fast, loop = _both_ways(monkeypatch, run)
    np.testing.assert_array_equal(fast, loop)
    assert fast[0] == 4
    p = np.exp(np.asarray(logits, np.float64) - np.max(logits))
    p /= p.sum()
    freq = np.bincount(fast[1:], minlength=9) / (n - 1)
    sigma = np.sqrt(p * (1 - p) / (n - 1))  # the draws are independent: binomial error bars
    assert np.all(np.abs(freq - p) < 5 * sigma), (freq, p)


def test_side_by_side_samples_do_not_depend_on_the_device_count():
    """Chains split over 1, 2 or 4 CPU devices (3 chains: padded to a multiple of the count) each run
    their own sweeps side by side, with the same samples."""
    program, free_blocks, clamped = _bipartite("categorical", 10, 4, 8)
    rng = np.random.default_rng(9)
    init, clamp = _states("categorical", rng, 3, free_blocks), _states("categorical", rng, 3, [clamped])
    schedule = SamplingSchedule(2, 200, 2)
    assert len(jax.devices("cpu")) >= 4, "conftest forces 4 host devices"
    runs = [[np.asarray(x) for x in sample_states_batched(jax.random.key(10), program, schedule, init, clamp, free_blocks,
                                                          devices=jax.devices("cpu")[:d])] for d in (1, 2, 4)]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)
