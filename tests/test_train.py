"""heatbath.train: KL gradients of spin, categorical and mixed EBMs against exact enumeration; fit; model files."""

from __future__ import annotations

import contextlib
import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from stats_helpers import Z_LIMIT

import heatbath.train as ht
from heatbath import Block, CategoricalNode, SamplingSchedule, SpinNode
from heatbath.errors import HeatbathError, StateError
from heatbath.exact import exact_distribution
from heatbath.graphs import color_blocks
from heatbath.models import (
    CategoricalEBM,
    CategoricalEBMFactor,
    DiscreteEBMFactor,
    FactorizedEBM,
    IsingEBM,
    SpinEBMFactor,
)
from heatbath.train import loop as train_loop

SCHEDULE = SamplingSchedule(40, 1, 1)  # one sample per chain after warm-up: chains are i.i.d. draws


def _ising(rng, n=6):
    nodes = [SpinNode(i) for i in range(n)]
    edges = [(nodes[i], nodes[j]) for i, j in itertools.combinations(range(n), 2) if rng.random() < 0.6]
    biases = rng.normal(0, 0.4, n).astype(np.float32)
    weights = rng.normal(0, 0.5, len(edges)).astype(np.float32)
    return IsingEBM(nodes, edges, biases, weights, 0.9), nodes


def _spin_factors(rng):
    """Five free spins and one conditioning spin with fields, pairs and a three-spin term."""
    nodes = [SpinNode(i) for i in range(6)]
    pairs = [p for p in itertools.combinations(range(6), 2) if rng.random() < 0.5]
    triples = [(0, 2, 4), (1, 3, 5)]
    factors = [
        SpinEBMFactor([Block(nodes)], jnp.asarray(rng.normal(0, 0.4, 6), jnp.float32)),
        SpinEBMFactor(
            [Block([nodes[i] for i, _ in pairs]), Block([nodes[j] for _, j in pairs])],
            jnp.asarray(rng.normal(0, 0.5, len(pairs)), jnp.float32),
        ),
        SpinEBMFactor(
            [Block([nodes[t[k]] for t in triples]) for k in range(3)], jnp.asarray(rng.normal(0, 0.5, 2), jnp.float32)
        ),
    ]
    return FactorizedEBM(factors), nodes


def _categorical(rng, k=3):
    nodes = [CategoricalNode(i) for i in range(4)]
    edges = [
        (nodes[0], nodes[1]),
        (nodes[1], nodes[2]),
        (nodes[2], nodes[3]),
        (nodes[0], nodes[3]),
        (nodes[0], nodes[2]),
    ]
    biases = rng.normal(0, 0.5, (4, k)).astype(np.float32)
    weights = rng.normal(0, 0.6, (len(edges), k, k)).astype(np.float32)
    return CategoricalEBM(nodes, biases, edges, weights), nodes


def _mixed(rng):
    """Spins s0..s3 and 3-state categories c0..c2, with spin-category terms s·W[c] and a spin-spin pair."""
    s = [SpinNode(f"s{i}") for i in range(4)]
    c = [CategoricalNode(f"c{i}") for i in range(3)]
    factors = [
        SpinEBMFactor([Block(s)], jnp.asarray(rng.normal(0, 0.4, 4), jnp.float32)),
        CategoricalEBMFactor([Block(c)], jnp.asarray(rng.normal(0, 0.5, (3, 3)), jnp.float32)),
        DiscreteEBMFactor(
            [Block([s[0], s[1], s[2], s[3]])],
            [Block([c[0], c[1], c[2], c[0]])],
            jnp.asarray(rng.normal(0, 0.6, (4, 3)), jnp.float32),
        ),
        CategoricalEBMFactor(
            [Block([c[0], c[1]]), Block([c[1], c[2]])], jnp.asarray(rng.normal(0, 0.5, (2, 3, 3)), jnp.float32)
        ),
        SpinEBMFactor([Block([s[0]]), Block([s[3]])], jnp.asarray(rng.normal(0, 0.5, 1), jnp.float32)),
    ]
    return FactorizedEBM(factors), s, c


def _estimate_from_random_chains_eagerly(key, spec, data, cond, n_pos, n_neg):
    key_pos, key_neg, key = jax.random.split(key, 3)
    init_pos = spec.random_positive_state(key_pos, n_pos, data[0].shape[0]) if spec.gibbs_positive else None
    return ht.estimate_kl_grad(key, spec, data, cond, init_pos, spec.random_negative_state(key_neg, n_neg))


_estimate_from_random_chains = eqx.filter_jit(_estimate_from_random_chains_eagerly)


_exact_kl_grad = eqx.filter_jit(eqx.filter_grad(ht.exact_kl))


def _check_against_exact(spec, data, cond, *, n_pos=400, n_neg=6000, seed=0):
    grads, pos, neg = _estimate_from_random_chains(jax.random.key(seed), spec, data, cond, n_pos, n_neg)

    # Exact: jax.grad of KL(batch ‖ model) computed by enumeration = E_data E_{h|v}[∂E/∂θ] - E_model[∂E/∂θ].
    table = ht.exact_kl_table(spec, data)
    exact = _exact_kl_grad(spec.ebm, table, cond)
    flat_g, flat_e = jax.tree.leaves(grads), jax.tree.leaves(exact)
    flat_sp, flat_sn = jax.tree.leaves(pos.grad_stderr), jax.tree.leaves(neg.grad_stderr)
    assert len(flat_g) == len(flat_e) == len(flat_sp) == len(flat_sn) > 0
    for g, e, sp, sn in zip(flat_g, flat_e, flat_sp, flat_sn):
        g, e = np.asarray(g, np.float64), np.asarray(e, np.float64)
        se = np.sqrt(np.asarray(sp, np.float64) ** 2 + np.asarray(sn, np.float64) ** 2)
        assert np.all(np.isfinite(se)) and g.shape == e.shape
        z = np.abs(g - e) / np.maximum(se, 1e-12)
        assert np.all((z < Z_LIMIT) | (np.abs(g - e) < 1e-5)), (z.max(), g, e, se)
    assert max(np.abs(np.asarray(x)).max() for x in flat_e) > 0.05  # not trivially zero
    return grads, pos, neg


def test_exact_kl_matches_enumeration():
    rng = np.random.default_rng(0)
    model, nodes = _ising(rng)
    vis, hid = nodes[:3], nodes[3:]
    spec = ht.TrainingSpec(
        model, [Block(vis)], [], color_blocks(model, nodes=hid), color_blocks(model), SCHEDULE, SCHEDULE
    )
    data = np.asarray(rng.random((50, 3)) < 0.5)
    table = ht.exact_kl_table(spec, [data])
    dist = exact_distribution(model, [Block(vis), Block(hid)])
    p_v = dist.probs.reshape(8, 8).sum(1)
    counts = np.bincount(data @ np.array([4, 2, 1]), minlength=8) / 50
    seen = counts > 0
    expected = np.sum(counts[seen] * np.log(counts[seen] / p_v[seen]))
    np.testing.assert_allclose(float(ht.exact_kl(model, table)), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("paired", [False, True])
def test_ising_gradient_with_latent_nodes_matches_exact(paired, request, monkeypatch):
    """Each phase on its own, and (`paired`) both phases in the same updates (`paired_on_cpu`)."""
    calls = request.getfixturevalue("paired_on_cpu") if paired else []
    if paired:
        # a compiled call of its own: the module's may hold a trace of the unpaired path
        monkeypatch.setitem(globals(), "_estimate_from_random_chains", eqx.filter_jit(_estimate_from_random_chains_eagerly))
    rng = np.random.default_rng(1)
    model, nodes = _ising(rng)
    vis, hid = nodes[:3], nodes[3:]
    spec = ht.TrainingSpec(
        model, [Block(vis)], [], color_blocks(model, nodes=hid), color_blocks(model), SCHEDULE, SCHEDULE
    )
    data = jnp.asarray(rng.random((4, 3)) < 0.5)
    grads, pos, neg = _check_against_exact(spec, [data], [])
    assert isinstance(grads, IsingEBM) and grads.weights.shape == model.weights.shape
    # PCD needs the final chains back, shaped like the initial ones.
    assert [x.shape for x in neg.final_state] == [(6000, len(b)) for b in spec.negative_free_blocks]
    assert [x.shape for x in pos.final_state] == [(400, 4, len(b)) for b in spec.positive_free_blocks]
    np.testing.assert_allclose(grads.weights, pos.grad.weights - neg.grad.weights, atol=1e-6)
    assert len(calls) == paired and all(out is not None for out in calls)  # the pairs ran


def test_fully_visible_spin_factors_with_conditioning_node_match_exact():
    rng = np.random.default_rng(2)
    model, nodes = _spin_factors(rng)
    free, cond_node = nodes[:5], nodes[5]
    spec = ht.TrainingSpec(
        model, [Block(free)], [Block([cond_node])], [], color_blocks(model, nodes=free), SCHEDULE, SCHEDULE
    )
    data = jnp.asarray(rng.random((6, 5)) < 0.5)
    grads, pos, _ = _check_against_exact(spec, [data], [jnp.array([True])])
    assert len(grads.factors) == 3 and grads.factors[2].weights.shape == (2,)
    assert pos.final_state == []


def test_ising_gradient_summed_over_pieces_of_samples_matches_exact(monkeypatch):
    """The kernels' samples a few at a time (`kernels.pieces`): several samples a chain, in pieces
    of two (the first piece, the loop, one left over), still give the exact gradient."""
    import heatbath.kernels.pieces as pieces

    monkeypatch.setattr(pieces, "PIECE_ELEMENTS", 2 * 6)  # two samples of the six free spins a piece ...
    monkeypatch.setattr(pieces, "PIECE_TOTAL", 2 * 6)  # ... however many chains run
    rng = np.random.default_rng(6)
    model, nodes = _ising(rng)
    vis, hid = nodes[:3], nodes[3:]
    schedule = SamplingSchedule(6, 7, 2)
    spec = ht.TrainingSpec(model, [Block(vis)], [], color_blocks(model, nodes=hid), color_blocks(model), schedule, schedule)
    blocks = spec.negative_free_blocks
    assert pieces.samples_per_piece(spec.program_negative(model), schedule, 3000) == 2
    counted, final = pieces.fold_kernel_samples(jax.random.key(0), spec.program_negative(model), schedule,
                                                [jnp.zeros(len(b), bool) for b in blocks], [],
                                                lambda count, samples, clamped: count + samples[0].shape[0], 0)
    assert int(counted) == 7 and [x.shape for x in final] == [(len(b),) for b in blocks]
    data = jnp.asarray(rng.random((4, 3)) < 0.5)
    _check_against_exact(spec, [data], [], n_pos=200, n_neg=3000, seed=6)


def _autodiff_sums(model, samples, clamped, blocks):
    from heatbath.train.gradients import energy_grad

    grads, energy = None, 0.0
    for t in range(samples[0].shape[0]):
        e, g = energy_grad(model, [s[t] for s in samples] + list(clamped), blocks)
        grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
        energy += float(e)
    return grads, energy


@pytest.mark.parametrize("count", [5, 37])  # one word of packed samples, and two with padding bits
@pytest.mark.parametrize("kind", ["ising", "categorical", "spin factors", "mixed factors"])
def test_gradient_sums_from_moments_equal_autodiff_per_sample(kind, count):
    """`moment_grads`: Σ_t ∂E/∂θ and Σ_t E from the samples' moments equal the sums of autodiff of the
    energy at each sample, with free and clamped blocks in any node order; other models keep autodiff."""
    from heatbath.train.moment_grads import moment_grad_sums

    rng = np.random.default_rng(11)

    def spins(shape):
        return jnp.asarray(rng.random(shape) < 0.5)

    def categories(shape):
        return jnp.asarray(rng.integers(0, 3, shape), jnp.uint8)

    if kind == "ising":
        model, nodes = _ising(rng, 9)
        parts = [[nodes[i] for i in part] for part in ([4, 0, 7], [2, 8, 5], [1, 6, 3])]
    elif kind == "categorical":
        model, nodes = _categorical(rng, k=3)
        model = CategoricalEBM(nodes, model.biases, [(nodes[0], nodes[1]), (nodes[1], nodes[2]), (nodes[2], nodes[3]),
                                                    (nodes[0], nodes[3])], model.weights[:4], 0.8)
        parts = [[nodes[2]], [nodes[0]], [nodes[3], nodes[1]]]
    elif kind == "spin factors":
        model, nodes = _spin_factors(rng)  # fields, pairs and three-spin terms
        parts = [[nodes[5], nodes[1]], [nodes[3], nodes[0], nodes[4]], [nodes[2]]]
    else:
        model, s, c = _mixed(rng)  # spin-category terms, K x K category pairs, a spin pair
        parts = [[s[2], s[0]], [c[1], c[0]], [s[3], s[1]], [c[2]]]  # spins, categories, clamped: spins, categories
    blocks = [Block(p) for p in parts]
    n_free = 2  # the first two blocks are free, the rest clamped

    def draw(block, shape):
        return spins(shape) if isinstance(block.nodes[0], SpinNode) else categories(shape)

    samples = [draw(b, (count, len(b))) for b in blocks[:n_free]]
    clamped = [draw(b, (len(b),)) for b in blocks[n_free:]]
    grads, energy = moment_grad_sums(model, blocks)(samples, clamped)
    want_grads, want_energy = _autodiff_sums(model, samples, clamped, blocks)
    got, want = jax.tree.leaves(grads), jax.tree.leaves(want_grads)
    assert jax.tree.structure(grads) == jax.tree.structure(want_grads) and len(got) >= 3
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(energy), want_energy, rtol=1e-5, atol=1e-5)
    assert max(np.abs(np.asarray(g)).max() for g in got) > 0

    assert moment_grad_sums(model, blocks[:-1]) is None  # a node missing from the blocks


def test_models_whose_energy_may_differ_keep_autodiff():
    from heatbath.models.discrete_ebm import SpinEBMFactor as Factor
    from heatbath.train.moment_grads import moment_grad_sums

    class Squared(Factor):
        def energy(self, global_state, block_spec):
            return super().energy(global_state, block_spec) ** 2

    model, nodes = _spin_factors(np.random.default_rng(12))
    blocks = [Block(nodes)]
    assert moment_grad_sums(model, blocks) is not None
    odd = FactorizedEBM([Squared(model.factors[0].node_groups, model.factors[0].weights)])
    assert moment_grad_sums(odd, blocks) is None


def _pair_if(paired: bool, request, monkeypatch) -> list:
    """`paired_on_cpu`'s record of the pairs where `paired`, with a compiled call of the test's own (the
    module's may hold a trace of the unpaired path); else an empty list."""
    if not paired:
        return []
    calls = request.getfixturevalue("paired_on_cpu")
    monkeypatch.setitem(globals(), "_estimate_from_random_chains", eqx.filter_jit(_estimate_from_random_chains_eagerly))
    return calls


@pytest.mark.parametrize("paired", [False, True])
def test_categorical_gradient_with_latent_nodes_matches_exact(paired, request, monkeypatch):
    calls = _pair_if(paired, request, monkeypatch)
    rng = np.random.default_rng(3)
    model, nodes = _categorical(rng)
    vis, hid = nodes[:2], nodes[2:]
    assert isinstance(ht.default_sampler(model, Block(hid)), ht.spec.CategoricalGibbsConditional)
    spec = ht.TrainingSpec(
        model, [Block(vis)], [], color_blocks(model, nodes=hid), color_blocks(model), SCHEDULE, SCHEDULE
    )
    data = jnp.asarray(rng.integers(0, 3, (3, 2)), jnp.uint8)
    grads, _, _ = _check_against_exact(spec, [data], [])
    assert grads.weights.shape == (5, 3, 3) and grads.biases.shape == (4, 3)
    assert not paired or (calls and all(out is not None for out in calls))


@pytest.mark.parametrize("paired", [False, True])
def test_mixed_gradient_with_latent_and_conditioning_nodes_matches_exact(paired, request, monkeypatch):
    calls = _pair_if(paired, request, monkeypatch)
    rng = np.random.default_rng(4)
    model, s, c = _mixed(rng)
    cond_node = s[3]
    vis_s, vis_c, hid = [s[0], s[1]], [c[0]], [s[2], c[1], c[2]]
    free = s[:3] + c
    spec = ht.TrainingSpec(
        model,
        [Block(vis_s), Block(vis_c)],
        [Block([cond_node])],
        color_blocks(model, nodes=hid),
        color_blocks(model, nodes=free),
        SCHEDULE,
        SCHEDULE,
    )
    data = [jnp.asarray(rng.random((4, 2)) < 0.5), jnp.asarray(rng.integers(0, 3, (4, 1)), jnp.int32)]
    grads, _, _ = _check_against_exact(spec, data, [jnp.array([False])])
    assert grads._factors[2].weights.shape == (4, 3)
    assert not paired or (calls and all(out is not None for out in calls))


def test_fit_compiles_once_and_learns_a_fully_visible_model():
    rng = np.random.default_rng(5)
    target, nodes = _ising(rng, n=5)
    dist = exact_distribution(target, [Block(nodes)])
    rows = rng.choice(dist.probs.size, size=2000, p=dist.probs / dist.probs.sum())
    data = dist.states[0][rows]
    start = IsingEBM(nodes, target.edges, np.zeros(5, np.float32), np.zeros(len(target.edges), np.float32), 0.9)
    spec = ht.TrainingSpec(
        start, [Block(nodes)], [], [], color_blocks(start), SamplingSchedule(2, 1, 1), SamplingSchedule(2, 1, 1)
    )
    seen = []
    before = train_loop._TRACES["train_step"]
    result = ht.fit(
        spec,
        [data],
        key=jax.random.key(0),
        optimizer=optax.adam(0.05),
        n_steps=100,
        batch_size=200,
        n_chains_negative=500,
        progress=False,
        callback=lambda step, ebm, log: seen.append((step, float(ebm.weights[0]))),
    )
    assert train_loop._TRACES["train_step"] - before == 1, "the training step was traced more than once"
    assert len(seen) == 100 and len({w for _, w in seen}) > 50  # the weights did change every step
    assert set(result.history) >= {"grad_norm", "pseudo_log_likelihood", "exact_kl"}
    assert result.history["exact_kl"][-1] < 0.5 * result.history["exact_kl"][0]
    assert result.history["pseudo_log_likelihood"][-1] > result.history["pseudo_log_likelihood"][0]
    assert float(result.ebm.beta) == pytest.approx(0.9)  # beta is not trained by default
    assert result.negative_state[0].shape[0] == 500


@contextlib.contextmanager
def _compilations():
    """The list of XLA compilations that happen inside the block (one entry each)."""
    seen = []

    def listener(name, seconds, **kwargs):
        if "backend_compile" in name:
            seen.append(name)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield seen
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@pytest.mark.parametrize("chains", [64, 30], ids=["chains split", "chains the devices do not divide"])
def test_fit_of_a_categorical_model_compiles_nothing_after_its_first_step(chains):
    """Categorical programs split their chains over the devices (the suite forces four CPU devices) and
    return the updated parameters on all of them; `fit` gives the first step's arguments those
    shardings too, so later steps do not compile again (the second one did)."""
    model, nodes = _categorical(np.random.default_rng(11))
    spec = ht.TrainingSpec(
        model, [Block(nodes)], [], [], color_blocks(model), SamplingSchedule(2, 1, 1), SamplingSchedule(2, 1, 1)
    )
    data = np.random.default_rng(12).integers(0, 3, (64, 4)).astype(np.uint8)
    after_step = []
    with _compilations() as compiled:
        result = ht.fit(spec, [data], key=jax.random.key(2), optimizer=optax.adam(0.05), n_steps=4, batch_size=16,
                        n_chains_negative=chains, progress=False, callback=lambda *_: after_step.append(len(compiled)))
    assert after_step[0] > 0 and after_step[-1] == after_step[0], after_step
    assert len(result.negative_state[0].sharding.device_set) == len(jax.devices())
    assert np.all(np.isfinite(result.history["grad_norm"])) and not np.allclose(result.ebm.weights, model.weights)
    with pytest.raises(StateError, match=r"has shape \(\); expected"):  # 0-d chain arrays: the shape error, not
        ht.fit(spec, [data], key=jax.random.key(2), optimizer=optax.adam(0.05), n_steps=1, batch_size=16,  # an IndexError
               init_state_negative=[np.uint8(0)] * len(spec.negative_free_blocks), progress=False)


def test_fit_of_a_spin_model_on_several_cpu_devices_keeps_its_chains_where_the_cpu_kernel_runs():
    """Spin programs on CPUs run the CPU kernel, a host callback that takes every chain on one device.
    Spreading the step over the four forced CPU devices made that callback and the other devices wait
    for each other at this size (XLA ended the process after 40 s), so `fit` keeps such steps as they
    were: one device, compiled once all the same."""
    rng = np.random.default_rng(5)
    nodes = [SpinNode(i) for i in range(40)]
    edges = [(nodes[i], nodes[j]) for i, j in itertools.combinations(range(40), 2) if rng.random() < 0.2]
    model = IsingEBM(nodes, edges, rng.normal(0, 0.1, 40).astype(np.float32), rng.normal(0, 0.1, len(edges)).astype(np.float32), 1.0)
    spec = ht.TrainingSpec(model, [Block(nodes)], [], [], color_blocks(model), SamplingSchedule(2, 1, 1), SamplingSchedule(2, 1, 1))
    after_step = []
    with _compilations() as compiled:
        result = ht.fit(spec, [rng.random((256, 40)) < 0.5], key=jax.random.key(2), optimizer=optax.adam(0.05), n_steps=3,
                        batch_size=64, n_chains_negative=4096, progress=False, metrics=False,
                        callback=lambda *_: after_step.append(len(compiled)))
    assert after_step[-1] == after_step[0], after_step
    assert len(result.negative_state[0].sharding.device_set) == 1


def test_save_and_load_round_trip(tmp_path):
    rng = np.random.default_rng(6)
    model, s, c = _mixed(rng)
    path = tmp_path / "model.npz"
    ht.save_model(path, model)
    template = eqx.tree_at(
        lambda m: [f.weights for f in m._factors], model, [jnp.zeros_like(f.weights) for f in model._factors]
    )
    loaded = ht.load_model(path, like=template)
    for a, b in zip(jax.tree.leaves(model), jax.tree.leaves(loaded)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    state = [jnp.array([True, False, True, True]), jnp.array([0, 2, 1], jnp.uint8)]
    assert float(loaded.energy(state, [Block(s), Block(c)])) == pytest.approx(
        float(model.energy(state, [Block(s), Block(c)]))
    )
    other, _ = _ising(rng)
    with pytest.raises(HeatbathError, match="template"):
        ht.load_model(path, like=other)


def test_bad_training_inputs_raise_clear_errors():
    rng = np.random.default_rng(7)
    model, nodes = _ising(rng)
    vis, hid = nodes[:3], nodes[3:]
    spec = ht.TrainingSpec(
        model, [Block(vis)], [], color_blocks(model, nodes=hid), color_blocks(model), SCHEDULE, SCHEDULE
    )
    key = jax.random.key(0)
    init_pos, init_neg = spec.random_positive_state(key, 2, 4), spec.random_negative_state(key, 3)
    good = jnp.zeros((4, 3), bool)
    with pytest.raises(StateError, match=r"expected \[batch, 3\]"):
        ht.estimate_kl_grad(key, spec, [jnp.zeros((4, 2), bool)], [], init_pos, init_neg)
    with pytest.raises(StateError, match="stored as bool"):
        ht.estimate_kl_grad(key, spec, [good.astype(jnp.float32)], [], init_pos, init_neg)
    with pytest.raises(StateError, match="empty"):
        ht.estimate_kl_grad(key, spec, [jnp.zeros((0, 3), bool)], [], init_pos, init_neg)
    with pytest.raises(StateError, match="n_chains, batch=4"):
        ht.estimate_kl_grad(key, spec, [good], [], spec.random_positive_state(key, 2, 5), init_neg)
    with pytest.raises(StateError, match="init_state_negative"):
        ht.estimate_kl_grad(key, spec, [good], [], init_pos, [x[0] for x in init_neg])
    with pytest.raises(HeatbathError, match="not sampled in the negative phase"):
        ht.TrainingSpec(
            model, [Block(vis)], [], color_blocks(model, nodes=hid), color_blocks(model, nodes=hid), SCHEDULE, SCHEDULE
        )
    with pytest.raises(HeatbathError, match="batch_size"):
        ht.fit(spec, [good], key=key, optimizer=optax.sgd(0.1), n_steps=1, batch_size=5, progress=False)


def test_categories_out_of_range_are_refused_with_the_fix():
    """Categorical data, conditioning values or chain states outside 0..K-1 raise a StateError naming
    the value and the range, in `estimate_kl_grad` and in `fit` (whose exact-KL table crashed inside
    numpy before)."""
    model, nodes = _categorical(np.random.default_rng(3))
    spec = ht.TrainingSpec(model, [Block(nodes[:2])], [], color_blocks(model, nodes=nodes[2:]), color_blocks(model),
                           SCHEDULE, SCHEDULE)
    key = jax.random.key(0)
    init_pos, init_neg = spec.random_positive_state(key, 2, 4), spec.random_negative_state(key, 3)
    with pytest.raises(StateError, match=r"data\[0\] holds the category 7.*take 0..2"):
        ht.estimate_kl_grad(key, spec, [jnp.full((4, 2), 7, jnp.uint8)], [], init_pos, init_neg)
    with pytest.raises(StateError, match=r"holds the category -1"):
        ht.estimate_kl_grad(key, spec, [np.full((4, 2), -1, np.int64)], [], init_pos, init_neg)
    bad_neg = [x.at[0, 0].set(3) for x in init_neg]
    with pytest.raises(StateError, match=r"init_state_negative\[0\] holds the category 3"):
        ht.estimate_kl_grad(key, spec, [jnp.zeros((4, 2), jnp.uint8)], [], init_pos, bad_neg)
    with pytest.raises(StateError, match=r"data\[0\] holds the category 7"):
        ht.fit(spec, [np.full((8, 2), 7, np.uint8)], key=key, optimizer=optax.sgd(0.1), n_steps=1, batch_size=4,
               progress=False)


def test_sampler_override_by_node_type():
    rng = np.random.default_rng(8)
    model, nodes = _ising(rng)

    class MarkedSpinConditional(ht.spec.SpinGibbsConditional):
        pass

    marked = MarkedSpinConditional()
    spec = ht.TrainingSpec(
        model, [Block(nodes)], [], [], color_blocks(model), SCHEDULE, SCHEDULE, samplers={SpinNode: marked}
    )
    assert all(s is marked for s in spec.samplers_negative)
    with pytest.raises(HeatbathError, match="empty"):
        ht.fit(
            spec,
            [np.zeros((0, 6), bool)],
            key=jax.random.key(0),
            optimizer=optax.sgd(0.1),
            n_steps=1,
            batch_size=1,
            progress=False,
        )


def test_fit_with_latent_nodes_compiles_once_and_logs_exact_kl():
    rng = np.random.default_rng(9)
    model, nodes = _ising(rng)
    vis, hid = nodes[:3], nodes[3:]
    spec = ht.TrainingSpec(
        model,
        [Block(vis)],
        [],
        color_blocks(model, nodes=hid),
        color_blocks(model),
        SamplingSchedule(3, 1, 1),
        SamplingSchedule(2, 1, 1),
    )
    data = rng.random((64, 3)) < 0.5
    before = train_loop._TRACES["train_step"]
    result = ht.fit(
        spec,
        [data],
        key=jax.random.key(1),
        optimizer=optax.sgd(0.05),
        n_steps=20,
        batch_size=16,
        n_chains_negative=64,
        n_chains_positive=2,
        progress=False,
    )
    assert train_loop._TRACES["train_step"] - before == 1
    assert "exact_kl" in result.history and "pseudo_log_likelihood" not in result.history
    assert np.all(np.isfinite(result.history["grad_norm"])) and len(result.history["grad_norm"]) == 20
    assert not np.allclose(np.asarray(result.ebm.weights), np.asarray(model.weights))
