"""Sweeps per loop step: the GPU sweep loops unrolled (`pallas_backend.sweeps_per_step`) sample exactly
what the plain loops sample.

On CUDA GPUs the multispin, torus-route and Potts lattice loops run `SWEEPS_PER_STEP` sweeps per loop
step; elsewhere one. Here (CPU) an unrolled loop (3 sweeps per step, which compiles faster than 8) is
forced onto the jax.numpy backends, with sweep counts that 3 does not divide (so the remainder steps
run too), and compared bit for bit with the plain loop.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from heatbath import Block, CategoricalNode, SamplingSchedule, sample_states
from heatbath.kernels import init_lattice, init_potts_lattice, multispin_run, potts_lattice, run_lattice, run_potts_lattice
from heatbath.kernels import pallas_backend, schedule_loop, torus_run
from heatbath.kernels.ising_torus import ising_torus
from heatbath.kernels.pairwise_tables import pairwise_tables
from heatbath.models.discrete_ebm import CategoricalEBM
from heatbath.sampling_programs import CategoricalSamplingProgram

from test_ising_torus import _program, _random_init

UNROLL = 3


def test_sweeps_per_step_unrolls_only_pallas_loops():
    assert pallas_backend.sweeps_per_step("pallas", 100) == pallas_backend.SWEEPS_PER_STEP
    assert pallas_backend.sweeps_per_step("pallas", 3) == 3
    assert pallas_backend.sweeps_per_step("pallas", 0) == 1
    for backend in ("jnp", "interpret"):
        assert pallas_backend.sweeps_per_step(backend, 100) == 1


def test_samples_per_step_makes_about_as_many_sweeps_a_step_on_gpus_only():
    step = pallas_backend.SWEEPS_PER_STEP
    assert pallas_backend.samples_per_step("pallas", 10**5, 1) == step
    assert pallas_backend.samples_per_step("pallas", 10**5, 2) == step // 2
    assert pallas_backend.samples_per_step("pallas", 10**5, 100) == 1
    assert pallas_backend.samples_per_step("pallas", 3, 1) == 3
    assert pallas_backend.samples_per_step("pallas", 0, 1) == 1
    for backend in ("jnp", "interpret"):
        assert pallas_backend.samples_per_step(backend, 10**5, 1) == 1


def _unrolled_and_plain(monkeypatch, run, sample_loops: bool = False):
    """`run()` with every sweep loop (and with `sample_loops` every sample loop) unrolled as on a GPU,
    then with plain loops (caches cleared, since the unroll is read at trace time)."""
    outputs, unrolled_loops = [], []

    def step(backend, n, *_):
        unrolled_loops.append(n)
        return max(1, min(UNROLL, n))

    for unrolled in (True, False):
        with monkeypatch.context() as patch:
            if unrolled:
                for module in (multispin_run, torus_run, potts_lattice, schedule_loop):  # schedule_loop: the pairwise loop
                    patch.setattr(module, "sweeps_per_step", step)
                if sample_loops:  # every kernel path's sample loop is `schedule_loop.run_schedule`
                    patch.setattr(schedule_loop, "samples_per_step", step)
            jax.clear_caches()
            outputs.append(jax.tree.map(np.asarray, run()))
    jax.clear_caches()
    assert any(n > UNROLL for n in unrolled_loops)  # the unrolled run did trace loops with remainders
    return outputs


def test_unrolled_lattice_loop_gives_the_same_samples(monkeypatch):
    init = init_lattice(jax.random.key(0), 64, 2)
    unrolled, plain = _unrolled_and_plain(
        monkeypatch, lambda: run_lattice(jax.random.key(1), init, 0.44, 14, measure_every=7)
    )
    for a, b in zip(jax.tree.leaves(unrolled), jax.tree.leaves(plain)):
        np.testing.assert_array_equal(a, b)


def test_unrolled_potts_loop_gives_the_same_samples(monkeypatch):
    init = init_potts_lattice(jax.random.key(0), 8, 3, q=3)
    unrolled, plain = _unrolled_and_plain(
        monkeypatch, lambda: run_potts_lattice(jax.random.key(1), init, 0.9, 13, q=3, measure_every=13, backend="jnp")
    )
    for a, b in zip(jax.tree.leaves(unrolled), jax.tree.leaves(plain)):
        np.testing.assert_array_equal(a, b)


def test_unrolled_torus_route_gives_the_same_samples(monkeypatch):
    program, _, blocks, _ = _program(64, 0.44, 0.05)
    torus = ising_torus(program, pairwise_tables(program))
    states = _random_init(blocks, 3)
    words = jax.random.bits(jax.random.key(2), (3, 2), np.uint32)
    index = torus_run.torus_index(torus, [np.asarray(program.gibbs_spec.node_ids(blocks[1].nodes))])
    schedule = SamplingSchedule(7, 2, 4)  # warm-up and steps per sample: neither a multiple of 3
    run = jax.jit(lambda words, states: torus_run.run_ising_torus(torus, schedule, words, states, index, "jnp"))
    unrolled, plain = _unrolled_and_plain(monkeypatch, lambda: run(words, states))
    np.testing.assert_array_equal(unrolled[0], plain[0])


def test_unrolled_sample_loops_give_the_same_samples(monkeypatch):
    """Many samples one or two sweeps apart (the sample loop unrolled, 7 samples after the first so
    that 3 leaves a remainder): the torus route and the pairwise categorical sweep."""
    program, _, blocks, _ = _program(64, 0.44, 0.05)
    torus = ising_torus(program, pairwise_tables(program))
    states = _random_init(blocks, 2)
    words = jax.random.bits(jax.random.key(2), (2, 2), np.uint32)
    index = torus_run.torus_index(torus, [np.asarray(program.gibbs_spec.node_ids(blocks[0].nodes))])
    schedule = SamplingSchedule(1, 8, 2)
    run = jax.jit(lambda words, states: torus_run.run_ising_torus(torus, schedule, words, states, index, "jnp"))
    unrolled, plain = _unrolled_and_plain(monkeypatch, lambda: run(words, states), sample_loops=True)
    np.testing.assert_array_equal(unrolled[0], plain[0])

    # two coupled nodes: a lone node's sweeps are independent and run side by side, without a loop
    a, b = CategoricalNode(num_states=9), CategoricalNode(num_states=9)
    weights = jnp.linspace(-1, 1, 81).reshape(1, 9, 9)
    ebm = CategoricalEBM([a, b], biases=jnp.linspace(-1, 1, 18).reshape(2, 9), edges=[(a, b)], weights=weights)
    program = CategoricalSamplingProgram(ebm, [Block([a]), Block([b])], [])
    draws = lambda: sample_states(jax.random.key(3), program, SamplingSchedule(0, 8, 1),  # noqa: E731
                                  [jnp.zeros((1,), jnp.uint8)] * 2, [], [Block([a])])
    unrolled, plain = _unrolled_and_plain(monkeypatch, draws, sample_loops=True)
    np.testing.assert_array_equal(unrolled[0], plain[0])
    assert len(np.unique(plain[0])) > 1
