"""The pairwise kernels (Ising models and Boltzmann machines; Potts and pairwise categorical EBMs)
sample the exact distribution, and a chain's samples do not depend on how many chains run or on how
many devices share them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from heatbath import Block, SamplingSchedule, SpinNode
from heatbath.graphs import color_blocks
from heatbath.kernels.batched import sample_states_batched
from heatbath.kernels.pairwise_tables import pairwise_kind
from heatbath.kernels.pallas_spin import pallas_available
from heatbath import CategoricalNode
from heatbath.models import CategoricalEBMFactor, FactorizedEBM, SpinEBMFactor
from stats_helpers import random_init
from test_exact_agreement import _program, _tuples, _groups
from test_exact_agreement import _check as check_against_exact
from test_batched_fast_path import _batched_final_states


def pairwise_spin_model(rng, n, scale=0.6):
    """Biases and frustrated random couplings (order 1 and 2 only): an Ising spin glass."""
    nodes = [SpinNode(f"s{i}") for i in range(n)]
    factors = []
    for order, count in ((1, n), (2, 2 * n)):
        tuples = _tuples(rng, nodes, order, count)
        factors.append(SpinEBMFactor(_groups(tuples), jnp.asarray(rng.normal(0, scale, len(tuples)), jnp.float32)))
    return nodes, [], FactorizedEBM(factors)


def pairwise_categorical_model(rng, n, k, scale=0.7):
    """Random biases and random K×K couplings on a random graph: a general pairwise categorical EBM."""
    nodes = [CategoricalNode(f"c{i}") for i in range(n)]
    factors = []
    for order, count in ((1, n), (2, 2 * n)):
        tuples = _tuples(rng, nodes, order, count)
        w = rng.normal(0, scale, (len(tuples),) + (k,) * order)
        factors.append(CategoricalEBMFactor(_groups(tuples), jnp.asarray(w, jnp.float32)))
    return [], nodes, FactorizedEBM(factors)


def _kernel_final_states(program, init, blocks, clamp_values, seed):
    assert pairwise_kind(program)[0] is not None
    return _batched_final_states(program, init, blocks, clamp_values, seed)


def test_spin_glass_matches_enumeration():
    spins, cats, ebm = pairwise_spin_model(np.random.default_rng(31), 12)
    check_against_exact(ebm, spins, cats, 2, seed=31, sample=_kernel_final_states)


def test_spin_glass_clamped_with_superblocks_matches_enumeration():
    spins, cats, ebm = pairwise_spin_model(np.random.default_rng(37), 12)
    check_against_exact(
        ebm, spins, cats, 2, clamp_nodes=spins[::4], superblocks=True, seed=37, sample=_kernel_final_states
    )


@pytest.fixture(params=["compiled CPU kernel", "jax.numpy sweep"])
def cpu_path(request, monkeypatch):
    """Run a test on both CPU paths of the pairwise spin kernel (compiled caches are cleared around
    the jax.numpy run, whose traces would otherwise be reused by the other)."""
    if request.param == "jax.numpy sweep":
        from heatbath.kernels import pairwise_sweep

        monkeypatch.setattr(pairwise_sweep, "cpu_kernel_runs_on", lambda devices: False)
        jax.clear_caches()
        yield request.param
        jax.clear_caches()
    else:
        yield request.param


def test_samples_do_not_depend_on_chain_count_or_devices(cpu_path):
    spins, _, ebm = pairwise_spin_model(np.random.default_rng(5), 10)
    blocks = color_blocks(ebm)
    program = _program(ebm, blocks, [], 2)
    assert pairwise_kind(program)[0] == "spin"
    init = random_init(jax.random.key(0), blocks, 8, [2] * len(blocks), [jnp.bool_] * len(blocks))
    schedule = SamplingSchedule(4, 3, 2)
    every = [Block(spins)]
    runs = [
        sample_states_batched(jax.random.key(2), program, schedule, init, [], every, devices=jax.devices("cpu")[:d])
        for d in (1, 2, 4)
    ]
    assert len(jax.devices("cpu")) >= 4, "conftest forces 4 host devices"
    for other in runs[1:]:
        np.testing.assert_array_equal(np.asarray(runs[0][0]), np.asarray(other[0]))
    # 3 chains on 4 devices (padded) and the first 3 chains of 8 agree
    few = sample_states_batched(
        jax.random.key(2), program, schedule, [x[:3] for x in init], [], every, devices=jax.devices("cpu")[:4]
    )
    np.testing.assert_array_equal(np.asarray(runs[0][0][:3]), np.asarray(few[0]))
    assert runs[0][0].shape == (8, 3, 10) and runs[0][0].dtype == jnp.bool_
    assert not np.array_equal(np.asarray(runs[0][0][0]), np.asarray(runs[0][0][1]))


@pytest.mark.skipif(not pallas_available(), reason="the fused kernel runs on a CUDA GPU")
def test_fused_gpu_kernel_follows_the_same_chain_as_jax_numpy():
    """Same keys, same model (a 2,000-spin random graph): the fused kernel and the jax.numpy sweep take
    the same steps except where float rounding of the field flips a near-tie comparison."""
    from heatbath.kernels import pairwise_sweep as spin_sweep
    from heatbath.models import IsingEBM, IsingSamplingProgram

    rng = np.random.default_rng(0)
    n = 2000
    edges = {tuple(sorted(e)) for e in rng.integers(0, n, (6 * n, 2)).tolist() if e[0] != e[1]}
    nodes = [SpinNode() for _ in range(n)]
    pairs = [(nodes[a], nodes[b]) for a, b in sorted(edges)]
    ebm = IsingEBM(nodes, pairs, jnp.asarray(rng.normal(0, 1, n), jnp.float32),
                   jnp.asarray(rng.normal(0, 0.5, len(pairs)), jnp.float32), jnp.asarray(1.0))
    blocks = color_blocks(ebm)
    program = IsingSamplingProgram(ebm, blocks, [])
    chains = 256
    init = [jnp.zeros((chains, len(b)), bool) for b in blocks]
    words = jnp.stack([jnp.arange(chains, dtype=jnp.uint32), jnp.full((chains,), 7, jnp.uint32)], 1)
    states = [jnp.where(s, 1, -1).astype(jnp.int8).T for s in init]
    tables = spin_sweep.pairwise_tables(program)
    observed = [jnp.asarray(program.gibbs_spec.node_ids(nodes), jnp.int32)]
    outs = [
        spin_sweep._run_local(program, SamplingSchedule(1, 1, 1), tables, words, states, observed, method)[0]
        for method in ("gather", "pallas")
    ]
    agree = float(jnp.mean(outs[0] == outs[1]))
    assert agree > 0.9999, agree


def test_thrml_style_vmap_runs_the_kernel_and_matches_enumeration():
    """`jax.jit(jax.vmap(sample_states))` on a pairwise spin program becomes one kernel call."""
    spins, cats, ebm = pairwise_spin_model(np.random.default_rng(41), 10)
    check_against_exact(ebm, spins, cats, 2, clamp_nodes=spins[:2], seed=41)  # default sampler: jit(vmap(...))


def _one_chain_spin_program(seed: int, n: int):
    """A coloured pairwise spin glass of n spins, its program and one chain's all-down initial state."""
    spins, _, ebm = pairwise_spin_model(np.random.default_rng(seed), n)
    blocks = color_blocks(ebm)
    return spins, _program(ebm, blocks, [], 2), [jnp.zeros(len(b), bool) for b in blocks]


def test_vmapped_chains_equal_the_same_keys_run_one_at_a_time():
    from heatbath import sample_states

    spins, program, init = _one_chain_spin_program(43, 8)
    schedule = SamplingSchedule(3, 4, 2)
    keys = jax.random.split(jax.random.key(1), 5)
    every = [Block(spins)]
    batched = jax.jit(jax.vmap(lambda k: sample_states(k, program, schedule, init, [], every)))(keys)[0]
    alone = np.stack([np.asarray(sample_states(k, program, schedule, init, [], every)[0]) for k in keys])
    assert batched.shape == (5, 4, 8) and batched.dtype == jnp.bool_
    np.testing.assert_array_equal(np.asarray(batched), alone)


def test_eager_calls_reuse_one_compiled_call_per_program_structure(monkeypatch):
    """An eager `sample_states` runs one compiled call found by the program's structure: a program
    with new weights of the same structure traces nothing new, and samples its own weights (the same
    chain as the THRML-style call gives for it)."""
    from heatbath import sample_states
    from heatbath.kernels import dispatch

    spins, program, init = _one_chain_spin_program(71, 8)
    flipped = jax.tree.map(lambda w: -w if isinstance(w, jax.Array) and w.dtype == jnp.float32 else w, program)
    schedule, every = SamplingSchedule(3, 4, 2), [Block(spins)]
    traces = []
    run_pairwise = dispatch.run_pairwise
    monkeypatch.setattr(dispatch, "run_pairwise", lambda *a, **k: traces.append(1) or run_pairwise(*a, **k))
    dispatch._one_chain_call.cache_clear()
    eager = lambda p, seed: np.asarray(sample_states(jax.random.key(seed), p, schedule, init, [], every)[0])  # noqa: E731
    first, second, other = eager(program, 0), eager(program, 1), eager(flipped, 0)
    assert len(traces) == 1
    assert not np.array_equal(first, second) and not np.array_equal(first, other)
    thrml_style = jax.jit(jax.vmap(lambda k: sample_states(k, flipped, schedule, init, [], every)))
    np.testing.assert_array_equal(np.asarray(thrml_style(jax.random.key(0)[None])[0][0]), other)


def test_vmap_over_model_weights_falls_back_to_the_generic_path():
    from heatbath import sample_states

    spins, program, init = _one_chain_spin_program(47, 6)
    schedule = SamplingSchedule(2, 2, 1)
    scaled = jax.vmap(lambda s: jax.tree.map(lambda w: w * s if w.dtype == jnp.float32 else w, program))(jnp.arange(3.0))
    out = jax.vmap(lambda p, k: sample_states(k, p, schedule, init, [], [Block(spins)]))(
        scaled, jax.random.split(jax.random.key(0), 3)
    )[0]
    assert out.shape == (3, 2, 6)


def test_pairwise_categorical_matches_enumeration():
    spins, cats, ebm = pairwise_categorical_model(np.random.default_rng(53), 7, 3)
    check_against_exact(ebm, spins, cats, 3, seed=53, sample=_kernel_final_states)


def test_pairwise_categorical_clamped_through_vmap_matches_enumeration():
    spins, cats, ebm = pairwise_categorical_model(np.random.default_rng(59), 8, 3)
    check_against_exact(ebm, spins, cats, 3, clamp_nodes=cats[:2], seed=59)  # jit(vmap(sample_states))


@pytest.mark.parametrize("float16_parts", [False, True], ids=["platform-product", "float16-parts"])
def test_dense_bipartite_layer_runs_as_a_matrix_product_and_matches_exact(float16_parts, monkeypatch):
    """An RBM with 6 visible and 40 hidden spins: the visible block reads the hidden layer through a
    dense matrix product. p(v) is exact with the hidden units summed out analytically:
    p(v) ∝ exp(b·v) Π_j 2 cosh(c_j + Σ_i W_ij v_i). "float16-parts" runs the CUDA GPUs' product
    (`dense_product.float16_parts_product`) wherever the test runs."""
    from forced_routes import force_float16_parts
    from heatbath.models import IsingEBM, IsingSamplingProgram
    from heatbath.kernels.pairwise_tables import pairwise_tables
    from stats_helpers import Z_LIMIT, chi_square_z

    traced = force_float16_parts(monkeypatch) if float16_parts else []

    rng = np.random.default_rng(61)
    n_v, n_h = 6, 40
    visible = [SpinNode() for _ in range(n_v)]
    hidden = [SpinNode() for _ in range(n_h)]
    W = rng.normal(0, 0.25, (n_v, n_h)).astype(np.float32)
    b, c = rng.normal(0, 0.5, n_v).astype(np.float32), rng.normal(0, 0.5, n_h).astype(np.float32)
    edges = [(visible[i], hidden[j]) for i in range(n_v) for j in range(n_h)]
    ebm = IsingEBM(visible + hidden, edges, jnp.asarray(np.concatenate([b, c])), jnp.asarray(W.reshape(-1)), jnp.asarray(1.0))
    blocks = [Block(visible), Block(hidden)]
    program = IsingSamplingProgram(ebm, blocks, [])
    assert pairwise_tables(program).dense[0] == (True,)  # visible <- hidden: matrix product

    chains = 20_000
    init = [jnp.zeros((chains, n_v), bool), jnp.zeros((chains, n_h), bool)]
    out = sample_states_batched(jax.random.key(3), program, SamplingSchedule(40, 1, 1), init, [], [Block(visible)])[0]
    v = np.asarray(out[:, 0]).astype(np.int64)  # True = +1

    states = ((np.arange(2**n_v)[:, None] >> np.arange(n_v)[::-1]) & 1).astype(np.int64)
    spins = 2.0 * states - 1
    log_p = spins @ b + np.log(2 * np.cosh(c + spins @ W)).sum(1)
    probs = np.exp(log_p - log_p.max())
    probs /= probs.sum()
    index = (v * (1 << np.arange(n_v)[::-1])).sum(1)
    z = chi_square_z(np.bincount(index, minlength=2**n_v), probs)
    assert z < Z_LIMIT, z
    assert bool(traced) == float16_parts  # the forced product really ran


def test_nested_vmap_and_plain_jit_agree_with_a_flat_vmap():
    from heatbath import sample_states

    spins, program, init = _one_chain_spin_program(67, 6)
    schedule = SamplingSchedule(3, 2, 1)
    run = lambda k: sample_states(k, program, schedule, init, [], [Block(spins)])[0]  # noqa: E731
    keys = jax.random.split(jax.random.key(0), 6)
    flat = np.asarray(jax.vmap(run)(keys))
    nested = np.asarray(jax.jit(jax.vmap(jax.vmap(run)))(keys.reshape(2, 3)))
    np.testing.assert_array_equal(nested.reshape(flat.shape), flat)
    np.testing.assert_array_equal(np.asarray(jax.jit(run)(keys[4])), flat[4])


def test_dense_layers_listed_in_any_order_give_the_same_coupling_matrix():
    """An RBM layer's pairs listed visible by visible (each row's couplings in source order: the matrix
    is a slice of the coupling table) or shuffled (gathered by `pairwise_tables._dense_columns`) give
    the same matrices."""
    from heatbath.models import IsingEBM, IsingSamplingProgram
    from heatbath.kernels.pairwise_tables import block_couplings, pairwise_tables

    rng = np.random.default_rng(67)
    n_v, n_h = 40, 36
    visible, hidden = [SpinNode() for _ in range(n_v)], [SpinNode() for _ in range(n_h)]
    W = rng.normal(0, 0.3, (n_v, n_h)).astype(np.float32)
    bias = jnp.asarray(rng.normal(0, 0.5, n_v + n_h), jnp.float32)
    pairs = [(i, j) for i in range(n_v) for j in range(n_h)]
    matrices, layouts = [], []
    for order in (np.arange(len(pairs)), rng.permutation(len(pairs))):
        edges = [(visible[pairs[e][0]], hidden[pairs[e][1]]) for e in order]
        weights = jnp.asarray([W[pairs[e]] for e in order], jnp.float32)
        program = IsingSamplingProgram(IsingEBM(visible + hidden, edges, bias, weights, jnp.asarray(1.0)),
                                       [Block(visible), Block(hidden)], [])
        tables = pairwise_tables(program)
        layouts.append([type(tables.dense_columns[b][0]) for b in (0, 1)])
        matrices.append([np.asarray(block_couplings(program, tables, b)[1][0]) for b in (0, 1)])
    assert layouts == [[int, int], [np.ndarray, np.ndarray]]
    for in_order, shuffled, expected in zip(*matrices, (W, W.T)):
        np.testing.assert_array_equal(in_order, shuffled)
        np.testing.assert_allclose(in_order, expected, rtol=1e-6)  # spin tables hold w itself
