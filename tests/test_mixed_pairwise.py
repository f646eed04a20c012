"""Pairwise programs that mix spins with categorical nodes, or categorical nodes of different category
counts, run on the categorical kernels (spins as categories 0 = down and 1 = up) and sample the exact
distribution; their samples come back in each block's own dtype."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from heatbath import Block, BlockGibbsSpec, CategoricalNode, FactorSamplingProgram, SamplingSchedule, SpinNode
from heatbath import sample_states
from heatbath.exact import exact_distribution
from heatbath.kernels.batched import sample_states_batched
from heatbath.kernels.pairwise_tables import block_couplings, pairwise_kind, pairwise_tables
from heatbath.models import (CategoricalEBMFactor, CategoricalGibbsConditional, DiscreteEBMFactor, FactorizedEBM,
                             SpinEBMFactor, SpinGibbsConditional)
from stats_helpers import assert_matches_exact, final_states, random_init

N_CHAINS = 20_000
N_WARMUP = 60
THREE, FOUR = 3, 4


def mixed_pairwise_model(rng, scale=0.8):
    """Two spin blocks, one block of 3-state and one of 4-state nodes; biases on every node and random
    couplings between every pair of blocks (spin-spin, spin-category and 3-by-4 category tables), none
    inside a block. 2^3 · 3^2 · 4^2 = 1,152 states."""
    sa, sb = [SpinNode(f"a{i}") for i in range(2)], [SpinNode("b0")]
    t = [CategoricalNode(f"t{i}", num_states=THREE) for i in range(2)]
    f = [CategoricalNode(f"f{i}", num_states=FOUR) for i in range(2)]
    w = lambda *shape: jnp.asarray(rng.normal(0, scale, shape), jnp.float32)  # noqa: E731
    factors = [
        SpinEBMFactor([Block(sa + sb)], w(3)),
        CategoricalEBMFactor([Block(t)], w(2, THREE)),
        CategoricalEBMFactor([Block(f)], w(2, FOUR)),
        SpinEBMFactor([Block(sa), Block([sb[0], sb[0]])], w(2)),
        DiscreteEBMFactor([Block(sa + sb)], [Block([t[0], t[1], t[1]])], w(3, THREE)),
        DiscreteEBMFactor([Block([sa[1], sb[0]])], [Block(f)], w(2, FOUR)),
        CategoricalEBMFactor([Block([t[0], t[1], t[0]]), Block([f[0], f[1], f[1]])], w(3, THREE, FOUR)),
    ]
    return (sa, sb, t, f), FactorizedEBM(factors)


def _sampler(block: Block):
    node = block.nodes[0]
    return SpinGibbsConditional() if isinstance(node, SpinNode) else CategoricalGibbsConditional(node.num_states)


def _states_of(block: Block) -> int:
    node = block.nodes[0]
    return 2 if isinstance(node, SpinNode) else node.num_states


def _dtype(block: Block):
    return jnp.bool_ if isinstance(block.nodes[0], SpinNode) else jnp.uint8


def _program(ebm, free: list[Block], clamped: list[Block]) -> FactorSamplingProgram:
    spec = BlockGibbsSpec(free, clamped, ebm.node_shape_dtypes)
    return FactorSamplingProgram(spec, [_sampler(b) for b in spec.free_blocks], ebm.factors, [])


def _batched(program, init, blocks, clamp_values, seed, **options):
    out = sample_states_batched(jax.random.key(seed), program, SamplingSchedule(N_WARMUP, 1, 1), init, clamp_values, blocks,
                                **options)
    return [np.asarray(x[:, 0]) for x in out]


def _thrml_style(program, init, blocks, clamp_values, seed):
    return final_states(program, init, blocks, n_warmup=N_WARMUP, seed=seed, clamp=clamp_values)


def _check(free: list[Block], clamped: list[Block], ebm, sample, seed: int):
    rng = np.random.default_rng(seed)
    clamp_values = [jnp.asarray(rng.integers(0, _states_of(b), len(b))).astype(_dtype(b)) for b in clamped]
    program = _program(ebm, free, clamped)
    assert pairwise_kind(program) == ("categorical", "")
    init = random_init(jax.random.key(seed + 1), free, N_CHAINS, [_states_of(b) for b in free], [_dtype(b) for b in free])
    samples = sample(program, init, free, clamp_values, seed + 2)
    for s, b in zip(samples, free):
        assert s.dtype == np.dtype(_dtype(b)), (s.dtype, b)
    exact = exact_distribution(ebm, free, clamped_blocks=clamped, clamped_state=clamp_values)
    assert_matches_exact(samples, exact)


@pytest.mark.parametrize("sample", [_batched, _thrml_style], ids=["batched", "thrml-style vmap"])
def test_spins_and_two_category_counts_match_enumeration(sample):
    groups, ebm = mixed_pairwise_model(np.random.default_rng(3))
    _check([Block(g) for g in groups], [], ebm, sample, seed=3)


def test_mixed_blocks_clamped_match_enumeration():
    """A spin block and a 4-state block clamped: the others read them through the coupling tables."""
    (sa, sb, t, f), ebm = mixed_pairwise_model(np.random.default_rng(5))
    _check([Block(sa), Block(t)], [Block(sb), Block(f)], ebm, _thrml_style, seed=5)


def test_spin_program_with_a_clamped_categorical_block_runs_as_categories():
    (sa, sb, t, f), ebm = mixed_pairwise_model(np.random.default_rng(7))
    _check([Block(sa), Block(sb)], [Block(t), Block(f)], ebm, _batched, seed=7)


def test_tables_give_each_block_its_category_count():
    (sa, sb, t, f), ebm = mixed_pairwise_model(np.random.default_rng(9))
    tables = pairwise_tables(_program(ebm, [Block(g) for g in (sa, sb, t, f)], []))
    assert tables.kind == "categorical" and tables.n_categories == 0  # no one count: no Potts torus route
    assert tables.spin_blocks == (True, True, False, False) and tables.categories == (2, 2, THREE, FOUR)
    widths = {b: dict(zip([src for src, _, _ in tables.sources[b]], tables.tail_widths[b])) for b in range(4)}
    assert widths[0] == {1: 2, 2: THREE, 3: FOUR} and widths[3] == {0: 2, 1: 2, 2: THREE}


def test_one_chain_eager_call_equals_the_vmapped_chain():
    """The eager one-chain call and the THRML-style vmap drive a chain the same way, and give each
    block's samples in its own dtype."""
    groups, ebm = mixed_pairwise_model(np.random.default_rng(11))
    free = [Block(g) for g in groups]
    program = _program(ebm, free, [])
    init = [jnp.zeros(len(b), _dtype(b)) for b in free]
    schedule, key = SamplingSchedule(3, 5, 2), jax.random.key(4)
    eager = sample_states(key, program, schedule, init, [], free)
    vmapped = jax.jit(jax.vmap(lambda k: sample_states(k, program, schedule, init, [], free)))(key[None])
    for e, v, b in zip(eager, vmapped, free):
        assert e.dtype == _dtype(b) and e.shape == (5, len(b))
        np.testing.assert_array_equal(np.asarray(e), np.asarray(v[0]))


def dense_layer_model(rng, scale=0.3, grey_states=THREE):
    """Three hidden spins, two 3-state nodes and a 4-state label, free, reading 40 clamped spins and 32
    clamped `grey_states`-state nodes through every pair (dense layers, as an RBM's hidden units read
    its pixels), the label coupled to the hidden spins and the 3-state nodes. 2^3 · 3^2 · 4 = 288 free
    states."""
    hidden, cats = [SpinNode(f"h{i}") for i in range(3)], [CategoricalNode(f"c{i}", num_states=THREE) for i in range(2)]
    label = CategoricalNode("y", num_states=FOUR)
    pixels, grey = [SpinNode(f"p{i}") for i in range(40)], [CategoricalNode(f"g{i}", num_states=grey_states) for i in range(32)]
    w = lambda *shape: jnp.asarray(rng.normal(0, scale, shape), jnp.float32)  # noqa: E731
    every = lambda heads, tails: (Block([h for h in heads for _ in tails]), Block([t for _ in heads for t in tails]))  # noqa: E731
    hp, hg, cp, cg = every(hidden, pixels), every(hidden, grey), every(cats, pixels), every(cats, grey)
    factors = [
        SpinEBMFactor([Block(hidden)], w(3)),
        CategoricalEBMFactor([Block(cats)], w(2, THREE)),
        CategoricalEBMFactor([Block([label])], w(1, FOUR)),
        SpinEBMFactor(list(hp), w(len(hp[0]))),
        DiscreteEBMFactor([hg[0]], [hg[1]], w(len(hg[0]), grey_states)),
        DiscreteEBMFactor([cp[1]], [cp[0]], w(len(cp[0]), THREE)),
        CategoricalEBMFactor(list(cg), w(len(cg[0]), THREE, grey_states)),
        DiscreteEBMFactor([Block(hidden)], [Block([label] * 3)], w(3, FOUR) * 3),
        CategoricalEBMFactor([Block(cats), Block([label] * 2)], w(2, THREE, FOUR) * 3),
    ]
    return (hidden, cats, [label], pixels, grey), FactorizedEBM(factors)


@pytest.mark.parametrize("sample,float16_parts,grey_states",
                         [(_thrml_style, False, THREE), (_batched, False, THREE), (_batched, True, THREE), (_batched, False, 2)],
                         ids=["thrml-style vmap", "batched", "batched, float16 parts", "batched, binary grey nodes"])
def test_mixed_dense_layers_run_as_matrix_products_and_match_enumeration(sample, float16_parts, grey_states, monkeypatch):
    """Nodes of a mixed program reading whole blocks (an RBM-like dense layer) read them through matrix
    products (`pairwise_sweep._dense_logits`): the spins' one difference and the 3-state nodes' logits
    from spin sources (one product a category) and from 3-state sources (one per source category); with
    binary grey nodes, two-category sources whose couplings have a mean as well as a difference.
    "float16 parts" runs the CUDA GPUs' product (`dense_product.float16_parts_product`) on the CPU."""
    from forced_routes import force_float16_parts

    traced = force_float16_parts(monkeypatch) if float16_parts else []
    (hidden, cats, label, pixels, grey), ebm = dense_layer_model(np.random.default_rng(13), grey_states=grey_states)
    free, clamped = [Block(hidden), Block(cats), Block(label)], [Block(pixels), Block(grey)]
    tables = pairwise_tables(_program(ebm, free, clamped))
    dense = {b: dict(zip([src for src, _, _ in tables.sources[b]], tables.dense[b])) for b in range(3)}
    assert dense[0] == dense[1] == {2: False, 3: True, 4: True} and not any(dense[2].values())
    _check(free, clamped, ebm, sample, seed=13)
    assert bool(traced) == float16_parts  # the forced product really ran


@pytest.mark.parametrize("sample", [_thrml_style, _batched], ids=["thrml-style", "batched"])
def test_mixed_programs_with_wide_gathered_neighbourhoods_run_the_categorical_update(sample):
    """Hidden spins reading 40 of 100 clamped pixels (too few for a dense layer), one of them also 30
    nodes of a second pixel block, and a 3-state label: the tables are 40 and 30 slots wide, which the
    categorical update reads by a loop over chunks of slots (such programs kept the generic loop while
    the update unrolled every slot). 2^2 · 3 free states, exact marginal."""
    rng = np.random.default_rng(21)
    hidden, label = [SpinNode(f"h{i}") for i in range(2)], CategoricalNode("y", num_states=THREE)
    x, z = [SpinNode(f"x{i}") for i in range(100)], [SpinNode(f"z{i}") for i in range(100)]
    pairs = [(hidden[0], x[i]) for i in range(40)] + [(hidden[1], x[i]) for i in range(60, 100)]
    pairs += [(hidden[1], z[i]) for i in range(30)]
    w = lambda *shape: jnp.asarray(rng.normal(0, 0.25, shape), jnp.float32)  # noqa: E731
    ebm = FactorizedEBM([SpinEBMFactor([Block(hidden)], w(2)),
                         SpinEBMFactor([Block([a for a, _ in pairs]), Block([b for _, b in pairs])], w(len(pairs))),
                         DiscreteEBMFactor([Block(hidden)], [Block([label, label])], w(2, THREE))])
    free, clamped = [Block(hidden), Block([label])], [Block(x), Block(z)]
    tables = pairwise_tables(_program(ebm, free, clamped))
    assert max(nb.shape[1] for _, nb, _ in tables.sources[0]) == 40 and not any(tables.dense[0])
    _check(free, clamped, ebm, sample, seed=21)


def categorical_rbm(rng, n_v: int, n_h: int, hidden_states: int, edges: list[tuple[int, int]]):
    """3-state visible nodes and `hidden_states`-state hidden ones coupled along `edges` (visible i,
    hidden j) by general tables: (program, free blocks, a [n_v, 3], c [n_h, K_h], W [n_v, n_h, 3, K_h]
    with zeros off the edges)."""
    visible = [CategoricalNode(f"v{i}", num_states=THREE) for i in range(n_v)]
    hidden = [CategoricalNode(f"h{j}", num_states=hidden_states) for j in range(n_h)]
    a, c = rng.normal(0, 0.5, (n_v, THREE)), rng.normal(0, 0.5, (n_h, hidden_states))
    W = np.zeros((n_v, n_h, THREE, hidden_states))
    for i, j in edges:
        W[i, j] = rng.normal(0, 0.3, (THREE, hidden_states))
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    ebm = FactorizedEBM([
        CategoricalEBMFactor([Block(visible)], f32(a)), CategoricalEBMFactor([Block(hidden)], f32(c)),
        CategoricalEBMFactor([Block([visible[i] for i, _ in edges]), Block([hidden[j] for _, j in edges])],
                             f32(np.stack([W[i, j] for i, j in edges]))),
    ])
    free = [Block(visible), Block(hidden)]
    return _program(ebm, free, []), free, a, c, W


def visible_marginal_z(v: np.ndarray, a: np.ndarray, c: np.ndarray, W: np.ndarray) -> float:
    """Chi-square z of visible samples `[chains, n_v]` against p(v) ∝ exp(Σ_i a_i[v_i])
    Π_j Σ_c exp(c_j[c] + Σ_i W_ij[v_i, c]), the hidden units summed out."""
    from stats_helpers import chi_square_z

    n_v = a.shape[0]
    states = (np.arange(THREE**n_v)[:, None] // THREE ** np.arange(n_v)) % THREE  # index = Σ_i v_i 3^i
    field = c[None] + W[np.arange(n_v)[None, :], :, states].sum(1)  # [3^n_v, n_h, K_h]
    log_p = a[np.arange(n_v), states].sum(1) + np.log(np.exp(field).sum(-1)).sum(-1)
    probs = np.exp(log_p - log_p.max())
    probs /= probs.sum()
    index = (v.astype(np.int64) * THREE ** np.arange(n_v)).sum(1)
    return chi_square_z(np.bincount(index, minlength=probs.size), probs)


@pytest.mark.parametrize("sample,hidden_states", [(_batched, THREE), (_thrml_style, THREE), (_batched, 2)],
                         ids=["batched", "thrml-style vmap", "batched, binary hidden nodes"])
def test_categorical_rbm_reads_its_hidden_layer_through_products_and_matches_the_exact_marginal(sample, hidden_states):
    """A program of categorical nodes only (a categorical RBM): 4 visible 3-state nodes read 40 free
    hidden nodes through matrix products, as mixed programs do (until fac56d5 such programs kept the
    gathers and unrolled every slot: a 64 x 32 4-state RBM took 15 s to compile on a 2-core CPU).
    The hidden nodes read the 4 visible ones by gathers. Binary hidden nodes take the products'
    two-category route (a mean plus a half-difference)."""
    from stats_helpers import Z_LIMIT

    edges = [(i, j) for i in range(4) for j in range(40)]
    program, free, a, c, W = categorical_rbm(np.random.default_rng(31), 4, 40, hidden_states, edges)
    assert pairwise_tables(program).dense == ((True,), (False,))
    init = random_init(jax.random.key(32), free, N_CHAINS, [THREE, hidden_states], [jnp.uint8, jnp.uint8])
    z = visible_marginal_z(sample(program, init, free, [], 33)[0], a, c, W)
    assert z < Z_LIMIT, z


def test_wide_gathered_tables_loop_over_chunks_of_slots(monkeypatch):
    """3 visible nodes each read 20 of 50 hidden nodes (not a dense layer): tables of more than
    UNROLLED_SLOTS slots run a loop over chunks of slots (`pairwise_sweep._add_gathered`). It takes
    exactly the unrolled update's steps, and its samples match the exact visible marginal."""
    from heatbath.kernels import pairwise_sweep
    from stats_helpers import Z_LIMIT

    rng = np.random.default_rng(41)
    edges = [(i, int(j)) for i in range(3) for j in rng.choice(50, 20, replace=False)]
    program, free, a, c, W = categorical_rbm(rng, 3, 50, THREE, edges)
    tables = pairwise_tables(program)
    assert tables.dense == ((False,), (False,)) and tables.sources[0][0][1].shape[1] == 20 > pairwise_sweep.UNROLLED_SLOTS
    init = random_init(jax.random.key(42), free, N_CHAINS, [THREE, THREE], [jnp.uint8, jnp.uint8])
    widths = []  # the slot counts each traced update adds at once: chunks of 8 when looped, 20 unrolled
    add_slots = pairwise_sweep._add_slots
    monkeypatch.setattr(pairwise_sweep, "_add_slots", lambda theta, g, w: widths.append(g.shape[1]) or add_slots(theta, g, w))
    looped = _batched(program, init, free, [], 43, method="gather")  # the jax.numpy update on GPUs too
    assert visible_marginal_z(looped[0], a, c, W) < Z_LIMIT
    assert pairwise_sweep.SLOT_CHUNK in widths and 20 not in widths, widths
    monkeypatch.setattr(pairwise_sweep, "UNROLLED_SLOTS", 64)
    from heatbath.kernels import batched
    batched._pairwise_call.cache_clear()  # a new compiled call, traced with every slot unrolled
    pairwise_sweep._run._cached.clear_cache()  # (and the sweep it calls, which keeps its own traces)
    widths.clear()
    few = 1000  # a chain's samples do not depend on how many chains run (the first chains of `init`)
    unrolled = _batched(program, [x[:few] for x in init], free, [], 43, method="gather")
    assert 20 in widths and pairwise_sweep.SLOT_CHUNK not in widths, widths
    for x, y in zip(looped, unrolled):
        np.testing.assert_array_equal(x[:few], y)


def test_mixed_samples_do_not_depend_on_chain_count_or_devices():
    """Same seed, same samples on 1, 2 or 4 devices, and for the first chains of a larger call."""
    groups, ebm = mixed_pairwise_model(np.random.default_rng(19))
    free = [Block(g) for g in groups]
    program = _program(ebm, free, [])
    init = random_init(jax.random.key(0), free, 8, [_states_of(b) for b in free], [_dtype(b) for b in free])
    schedule = SamplingSchedule(4, 3, 2)
    assert len(jax.devices("cpu")) >= 4, "conftest forces 4 host devices"
    runs = [sample_states_batched(jax.random.key(2), program, schedule, init, [], free, devices=jax.devices("cpu")[:d])
            for d in (1, 2, 4)]
    few = sample_states_batched(jax.random.key(2), program, schedule, [x[:3] for x in init], [], free,
                                devices=jax.devices("cpu")[:4])
    for b, block in enumerate(free):
        assert runs[0][b].shape == (8, 3, len(block)) and runs[0][b].dtype == _dtype(block)
        for other in runs[1:]:
            np.testing.assert_array_equal(np.asarray(runs[0][b]), np.asarray(other[b]))
        np.testing.assert_array_equal(np.asarray(runs[0][b][:3]), np.asarray(few[b]))


@pytest.mark.parametrize("float16_parts", [False, True], ids=["platform-product", "float16-parts"])
def test_mixed_dense_layers_give_the_same_samples_on_any_number_of_devices(float16_parts, monkeypatch):
    """The matrix products of dense layers see a device's share of the chains: the samples must not
    depend on how many devices share them (clamped values differ per chain)."""
    from forced_routes import force_float16_parts

    traced = force_float16_parts(monkeypatch) if float16_parts else []
    (hidden, cats, label, pixels, grey), ebm = dense_layer_model(np.random.default_rng(17))
    free, clamped = [Block(hidden), Block(cats), Block(label)], [Block(pixels), Block(grey)]
    program = _program(ebm, free, clamped)
    rng = np.random.default_rng(18)
    clamp_values = [jnp.asarray(rng.integers(0, _states_of(b), (8, len(b)))).astype(_dtype(b)) for b in clamped]
    init = random_init(jax.random.key(0), free, 8, [_states_of(b) for b in free], [_dtype(b) for b in free])
    runs = [sample_states_batched(jax.random.key(2), program, SamplingSchedule(4, 3, 2), init, clamp_values, free,
                                  devices=jax.devices("cpu")[:d]) for d in (1, 2, 4)]
    for b in range(len(free)):
        for other in runs[1:]:
            np.testing.assert_array_equal(np.asarray(runs[0][b]), np.asarray(other[b]))
    assert bool(traced) == float16_parts


@pytest.mark.parametrize("float16_parts", [False, True], ids=["platform-product", "float16-parts"])
def test_labelled_rbm_reading_a_free_hidden_layer_matches_the_exact_marginal(float16_parts, monkeypatch):
    """The digits example's model, small: 4 spin pixels and a 3-state label (visible, one sampling
    group) read 40 free hidden spins through matrix products. With the hidden units summed out,
    p(v, y) ∝ exp(a·v + b_y) Π_j 2 cosh(c_j + Σ_i W_ij v_i + U_j[y]) over 2^4 · 3 = 48 states."""
    from forced_routes import force_float16_parts
    from stats_helpers import Z_LIMIT, chi_square_z

    traced = force_float16_parts(monkeypatch) if float16_parts else []
    rng = np.random.default_rng(23)
    n_v, n_h = 4, 40
    pixels, hidden = [SpinNode(f"v{i}") for i in range(n_v)], [SpinNode(f"h{j}") for j in range(n_h)]
    label = CategoricalNode("y", num_states=THREE)
    a, c = rng.normal(0, 0.5, n_v), rng.normal(0, 0.5, n_h)
    b, W, U = rng.normal(0, 0.5, THREE), rng.normal(0, 0.3, (n_v, n_h)), rng.normal(0, 0.3, (n_h, THREE))
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    ebm = FactorizedEBM([
        SpinEBMFactor([Block(pixels)], f32(a)), SpinEBMFactor([Block(hidden)], f32(c)),
        CategoricalEBMFactor([Block([label])], f32(b[None])),
        SpinEBMFactor([Block([p for p in pixels for _ in hidden]), Block([h for _ in pixels for h in hidden])], f32(W.reshape(-1))),
        DiscreteEBMFactor([Block(hidden)], [Block([label] * n_h)], f32(U)),
    ])
    visible = (Block(pixels), Block([label]))
    program = _program(ebm, [visible, Block(hidden)], [])
    tables = pairwise_tables(program)
    assert tables.kind == "categorical" and tables.dense[0] == tables.dense[1] == (True,)  # both read the hidden layer

    init = random_init(jax.random.key(24), [Block(pixels), Block([label]), Block(hidden)], N_CHAINS, [2, THREE, 2],
                       [jnp.bool_, jnp.uint8, jnp.bool_])
    v, y = _batched(program, init, list(visible), [], 25)
    spins = 2.0 * ((np.arange(2**n_v)[:, None] >> np.arange(n_v)) & 1) - 1  # state index = Σ_i v_i 2^i
    log_p = (spins @ a)[:, None] + b[None, :] + np.log(2 * np.cosh(c + (spins @ W)[:, None, :] + U.T[None])).sum(-1)
    probs = np.exp(log_p - log_p.max()).ravel()  # index (v, y) = v_index · 3 + y
    probs /= probs.sum()
    index = (v.astype(np.int64) << np.arange(n_v)).sum(1) * THREE + y[:, 0].astype(np.int64)
    z = chi_square_z(np.bincount(index, minlength=probs.size), probs)
    assert z < Z_LIMIT, z
    assert bool(traced) == float16_parts


def test_pairs_coupled_twice_in_a_dense_layer_add_their_couplings():
    """A dense layer whose pairs are coupled by two factors (every hidden–pixel pair once more, and the
    3-state nodes' pairs with the first 20 pixels a second time) is read as the sum of both weights
    (`pairwise_tables._dense_columns` gathers each extra coupling of a pair in a layer of its own): the
    matrix equals the sum built by hand, and the samples match enumeration."""
    rng = np.random.default_rng(29)
    (hidden, cats, label, pixels, grey), ebm = dense_layer_model(rng)
    again_h = [Block([h for h in hidden for _ in pixels]), Block([p for _ in hidden for p in pixels])]
    few = pixels[:20]
    again_c = [Block([c for c in cats for _ in few]), Block([p for _ in cats for p in few])]
    w_h = jnp.asarray(rng.normal(0, 0.3, len(again_h[0])), jnp.float32)
    w_c = jnp.asarray(rng.normal(0, 0.3, (len(again_c[0]), THREE)), jnp.float32)
    ebm = FactorizedEBM(list(ebm.factors) + [SpinEBMFactor(again_h, w_h), DiscreteEBMFactor([again_c[1]], [again_c[0]], w_c)])
    free, clamped = [Block(hidden), Block(cats), Block(label)], [Block(pixels), Block(grey)]
    program = _program(ebm, free, clamped)
    assert pairwise_kind(program) == ("categorical", "")
    tables = pairwise_tables(program)
    assert [len(tables.dense_columns[b][1]) for b in (0, 1)] == [2, 2]  # pixels: two layers of columns
    # Hidden spins as heads: one entry, 2 w σ(t), so the matrix's up-minus-down tail is 4 × the summed w
    _, couplings = block_couplings(program, tables, 0)
    first = np.asarray(ebm.factors[3].weights).reshape(3, 40)
    got = np.asarray(couplings[1])[:, :, 0]
    np.testing.assert_allclose(got[..., 1] - got[..., 0], 4 * (first + np.asarray(w_h).reshape(3, 40)), rtol=1e-6)
    _, couplings = block_couplings(program, tables, 1)  # 3-state heads: w[k] for up, −w[k] for down
    summed = np.array(ebm.factors[5].weights).reshape(2, 40, THREE)
    summed[:, :20] += np.asarray(w_c).reshape(2, 20, THREE)
    np.testing.assert_allclose(np.asarray(couplings[1])[..., 1], summed, rtol=1e-6)
    _check(free, clamped, ebm, _batched, seed=29)
