"""Two runs in the same kernel launches (`kernels.paired_runs`): each chain takes exactly the samples of
its own run, and training gradients built on the pairs match exact enumeration.

On a CPU the pairs run the table kernel's jax.numpy twin ("table-jnp"); on a CUDA GPU with NVRTC the
paired CUDA kernel, whose gradients must equal the phases run one after the other bit for bit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import heatbath.kernels.paired_runs as paired_runs
import heatbath.kernels.pieces as pieces
import heatbath.train as ht
from heatbath import Block, SamplingSchedule
from heatbath.graphs import color_blocks
from heatbath.kernels.cuda_runtime import nvrtc_available
from heatbath.kernels.pallas_backend import pallas_available
from heatbath.kernels.dispatch import key_words_of
from heatbath.kernels.paired_runs import FoldedRun, fold_paired_runs
from heatbath.kernels.pairwise_sweep import run_pairwise
from heatbath.models import IsingTrainingSpec, estimate_kl_grad, hinton_init
from test_ising_training import _model


def _collect(sums, samples, clamped):
    """A fold that keeps the samples themselves: `[P, free nodes]`."""
    return sums + jnp.concatenate([s.astype(jnp.float32) for s in samples], axis=1)


def _run(program, keys, init, clamped, schedule):
    n_free = sum(len(b) for b in program.gibbs_spec.free_blocks)
    return FoldedRun(keys, program, init, clamped, _collect, jnp.zeros((schedule.n_samples, n_free), jnp.float32))


def _alone(run: FoldedRun, schedule, method: str = "table-jnp"):
    """The run's samples `[chains, P, free nodes]` on its own, from the words its chains' first piece
    takes (`fold_kernel_samples`)."""
    spec = run.program.gibbs_spec
    words = jax.vmap(lambda k: key_words_of(jax.random.split(k)[0]))(run.keys)
    chains = run.keys.shape[0]
    states = list(run.init_state) + [jnp.broadcast_to(c, (chains,) + c.shape[-1:]) for c in run.clamped]
    observed = [np.asarray(spec.node_ids(Block(b).nodes, "node")) for b in spec.free_blocks]
    out = run_pairwise(run.program, schedule, words, states, observed, method=method)
    return np.concatenate([np.asarray(o, np.float32) for o in out], axis=2)


def test_each_chain_takes_the_samples_of_its_own_run():
    """Unequal chain counts (both padded), unequal updates a sweep (the longer run's last updates go
    alone), per-chain and shared clamped values: every sample and final state is the run's own."""
    model, nodes, _ = _model(seed=3)
    visible, hidden = nodes[:3], nodes[3:]
    schedule = SamplingSchedule(3, 4, 2)
    positive = IsingTrainingSpec(model, [Block(visible[:2])], [Block(visible[2:])], color_blocks(model, nodes=hidden),
                                 [Block([n]) for n in nodes[:2] + nodes[3:]], schedule, schedule)
    key = jax.random.key(5)
    k1, k2, k3, k4, k5 = jax.random.split(key, 5)
    a_chains, b_chains = 5, 7
    data = jax.random.bernoulli(k1, 0.5, (a_chains, 2))
    cond = jnp.asarray([True])
    init_a = hinton_init(k2, model, positive.program_positive.gibbs_spec.free_blocks, (a_chains,))
    init_b = hinton_init(k3, model, positive.program_negative.gibbs_spec.free_blocks, (b_chains,))
    run_a = _run(positive.program_positive, jax.random.split(k4, a_chains), init_a, [data, cond], schedule)
    run_b = _run(positive.program_negative, jax.random.split(k5, b_chains), init_b, [cond], schedule)
    assert len(positive.program_positive.gibbs_spec.sampling_order) < len(positive.program_negative.gibbs_spec.sampling_order)

    (sums_a, final_a), (sums_b, final_b) = fold_paired_runs(run_a, run_b, schedule, method="table-jnp")
    for run, sums, final in ((run_a, sums_a, final_a), (run_b, sums_b, final_b)):
        alone = _alone(run, schedule)
        np.testing.assert_array_equal(np.asarray(sums), alone)
        np.testing.assert_array_equal(np.concatenate([np.asarray(f, np.float32) for f in final], axis=1), alone[:, -1])
    assert 0 < np.asarray(sums_a).mean() < 1 and 0 < np.asarray(sums_b).mean() < 1


def test_each_categorical_chain_takes_the_samples_of_its_own_run():
    """The same for categorical programs (here spins with 3- and 4-state nodes, on the gather update):
    unequal chain counts, unequal updates a sweep, per-chain clamped values of both kinds."""
    from test_mixed_pairwise import _program, mixed_pairwise_model

    (sa, sb, t, f), ebm = mixed_pairwise_model(np.random.default_rng(21))
    schedule = SamplingSchedule(2, 5, 2)
    positive = _program(ebm, [Block(sa), Block(t)], [Block(sb), Block(f)])
    negative = _program(ebm, [Block(sa), Block(sb), Block(t), Block(f)], [])
    k1, k2, k3, k4, k5, k6 = jax.random.split(jax.random.key(8), 6)
    a_chains, b_chains = 6, 3
    clamped = [jax.random.bernoulli(k1, 0.5, (a_chains, 1)), jax.random.randint(k2, (a_chains, 2), 0, 4).astype(jnp.uint8)]
    init_a = [jax.random.bernoulli(k3, 0.5, (a_chains, 2)), jnp.zeros((a_chains, 2), jnp.uint8)]
    init_b = [jnp.ones((b_chains, 2), bool), jnp.zeros((b_chains, 1), bool), jax.random.randint(k4, (b_chains, 2), 0, 3).astype(jnp.uint8),
              jnp.full((b_chains, 2), 3, jnp.uint8)]
    run_a = _run(positive, jax.random.split(k5, a_chains), init_a, clamped, schedule)
    run_b = _run(negative, jax.random.split(k6, b_chains), init_b, [], schedule)

    (sums_a, final_a), (sums_b, final_b) = fold_paired_runs(run_a, run_b, schedule, method="table-jnp")
    for run, sums, final in ((run_a, sums_a, final_a), (run_b, sums_b, final_b)):
        alone = _alone(run, schedule, method="gather")
        np.testing.assert_array_equal(np.asarray(sums), alone)
        np.testing.assert_array_equal(np.concatenate([np.asarray(f, np.float32) for f in final], axis=1), alone[:, -1])
        assert [x.dtype for x in final] == [x.dtype for x in run.init_state]
    assert len(np.unique(np.asarray(sums_b))) > 3  # spins and categories moved


def test_pairs_are_declined_where_they_cannot_run(monkeypatch):
    """A schedule too long for one piece, or a CPU without the twin asked for: None (each phase alone)."""
    model, nodes, _ = _model(seed=3)
    schedule = SamplingSchedule(1, 3, 1)
    spec = IsingTrainingSpec(model, [Block(nodes[:3])], [], color_blocks(model, nodes=nodes[3:]), color_blocks(model),
                             schedule, schedule)
    keys = jax.random.split(jax.random.key(0), 4)
    init = hinton_init(keys[0], model, spec.program_negative.gibbs_spec.free_blocks, (4,))
    run = _run(spec.program_negative, keys, init, [], schedule)
    if jax.default_backend() == "cpu":
        assert fold_paired_runs(run, run, schedule) is None  # "auto" pairs only on a CUDA GPU
    assert fold_paired_runs(run, run, schedule, method="table-jnp") is not None
    monkeypatch.setattr(pieces, "PIECE_ELEMENTS", 8 * 2)  # two samples of 8 spins a piece: 3 need two pieces
    monkeypatch.setattr(pieces, "PIECE_TOTAL", 8 * 2)
    assert fold_paired_runs(run, run, schedule, method="table-jnp") is None


def _gpu_pairs() -> bool:
    return jax.default_backend() == "gpu" and nvrtc_available()


@pytest.mark.skipif(not _gpu_pairs(), reason="the paired CUDA kernel runs on a CUDA GPU with NVRTC")
def test_paired_kernel_gradients_equal_the_phases_one_after_the_other(monkeypatch):
    """On the GPU both training APIs take the paired kernel; declining the pair (each phase on its own
    launches) gives the same gradients bit for bit."""
    model, nodes, edges = _model(seed=4, n=10)
    visible, hidden = nodes[:4], nodes[4:]
    schedule = SamplingSchedule(4, 6, 2)
    pos_blocks, neg_blocks = color_blocks(model, nodes=hidden), color_blocks(model)
    spec = IsingTrainingSpec(model, [Block(visible)], [], pos_blocks, neg_blocks, schedule, schedule)
    train_spec = ht.TrainingSpec(model, [Block(visible)], [], pos_blocks, neg_blocks, schedule, schedule)
    k1, k2, k3 = jax.random.split(jax.random.key(9), 3)
    data = jax.random.bernoulli(k1, 0.5, (6, len(visible)))
    init_pos = hinton_init(k2, model, pos_blocks, (3, 6))
    init_neg = hinton_init(k3, model, neg_blocks, (20,))

    def both():
        thrml_api = estimate_kl_grad(jax.random.key(1), spec, nodes, edges, [data], [], init_pos, init_neg)
        train_api = ht.estimate_kl_grad(jax.random.key(1), train_spec, [data], [], init_pos, init_neg)
        return jax.tree.map(np.asarray, (thrml_api[:2], train_api[0]))

    calls = []
    original = paired_runs.fold_paired_runs
    monkeypatch.setattr(paired_runs, "fold_paired_runs", lambda *a, **k: calls.append(original(*a, **k)) or calls[-1])
    paired = both()
    assert len(calls) == 2 and all(out is not None for out in calls)
    monkeypatch.setattr(paired_runs, "fold_paired_runs", lambda *a, **k: None)
    alone = both()
    for got, want in zip(jax.tree.leaves(paired), jax.tree.leaves(alone)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(not pallas_available(), reason="the paired categorical kernel runs on a CUDA GPU")
def test_paired_categorical_gradients_equal_the_phases_one_after_the_other(monkeypatch):
    """On the GPU a mixed spin / 3-state / 4-state model's training gradient takes the paired
    categorical kernel; declining the pair gives the same gradient bit for bit."""
    from test_mixed_pairwise import mixed_pairwise_model

    (sa, sb, t, f), ebm = mixed_pairwise_model(np.random.default_rng(23))
    schedule = SamplingSchedule(4, 6, 2)
    spec = ht.TrainingSpec(ebm, [Block(f)], [], [Block(sa), Block(sb), Block(t)], [Block(g) for g in (sa, sb, t, f)],
                           schedule, schedule)
    k1, k2, k3 = jax.random.split(jax.random.key(9), 3)
    data = jax.random.randint(k1, (6, 2), 0, 4).astype(jnp.uint8)
    init_pos, init_neg = spec.random_positive_state(k2, 3, 6), spec.random_negative_state(k3, 20)

    def gradient():
        return jax.tree.map(np.asarray, ht.estimate_kl_grad(jax.random.key(1), spec, [data], [], init_pos, init_neg)[0])

    calls = []
    original = paired_runs.fold_paired_runs
    monkeypatch.setattr(paired_runs, "fold_paired_runs", lambda *a, **k: calls.append(original(*a, **k)) or calls[-1])
    paired = gradient()
    assert len(calls) == 1 and calls[0] is not None
    monkeypatch.setattr(paired_runs, "fold_paired_runs", lambda *a, **k: None)
    alone = gradient()
    for got, want in zip(jax.tree.leaves(paired), jax.tree.leaves(alone)):
        np.testing.assert_array_equal(got, want)
