"""The fused Pallas kernel of the pairwise categorical sweep takes the jax.numpy sweep's steps.

Interpreted (on any machine) it must give identical samples, so the exact-enumeration tests of the
jax.numpy sweep carry over to it; natively (CUDA GPUs, where `method="auto"` picks it for categorical
programs) it may differ only where the GPU's exp rounds a near-tie comparison the other way. The same
holds for the kernel's Potts updates (`coupling_structure`: one load per neighbour, or none for one J),
and the tests below check when those forms are read and which calls get them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from heatbath import Block, SamplingSchedule
from heatbath.graphs import color_blocks, lattice_2d
from heatbath.kernels import pairwise_sweep
from heatbath.kernels.coupling_structure import DIAGONAL, coupling_forms
from heatbath.kernels.pallas_backend import pallas_available
from heatbath.kernels.pallas_categorical import categorical_block_update, categorical_pair_update
from heatbath.models import CategoricalEBMFactor, FactorizedEBM
from heatbath.pgm import CategoricalNode
from stats_helpers import random_init
from test_exact_agreement import _program
from test_pairwise_kernels import pairwise_categorical_model


def _potts_like(model, value: float | None = None):
    """The same graph and biases with every K×K coupling zeroed off its diagonal: random diagonals, or
    `value` on all of them."""
    spins, cats, ebm = model

    def potts(w):
        eye = jnp.eye(w.shape[-1], dtype=w.dtype)
        return w * eye if value is None else jnp.broadcast_to(value * eye, w.shape)

    factors = [f if f.weights.ndim < 3 else CategoricalEBMFactor(f.node_groups, potts(f.weights)) for f in ebm.factors]
    return spins, cats, FactorizedEBM(factors)


def _prepared(model, k: int, clamp: int):
    spins, cats, ebm = model
    blocks = color_blocks(ebm, nodes=cats[clamp:])
    clamped = [Block(cats[:clamp])] if clamp else []
    return _program(ebm, blocks, clamped, k), blocks, clamped


def _run(program, k: int, chains: int, method: str, clamp: int = 0, forms=()):
    """Samples of every node after a short schedule, from fixed chain keys and random initial states."""
    spins, cats, ebm = program
    prog, blocks, clamped = _prepared(program, k, clamp)
    tables = pairwise_sweep.pairwise_tables(prog)
    all_blocks = list(blocks) + list(clamped)
    init = random_init(jax.random.key(0), all_blocks, chains, [k] * len(all_blocks), [jnp.uint8] * len(all_blocks))
    words = jnp.stack([jnp.arange(chains, dtype=jnp.uint32), jnp.full((chains,), 7, jnp.uint32)], 1)
    observed = [jnp.asarray(prog.gibbs_spec.node_ids(cats[clamp:]), jnp.int32)]
    schedule = SamplingSchedule(3, 1, 1)
    return pairwise_sweep._run_local(prog, schedule, tables, words, [s.T for s in init], observed, method, forms)[0]


def test_interpreted_kernel_takes_the_same_steps_as_jax_numpy(monkeypatch):
    """A general pairwise categorical EBM (K = 3, random K×K couplings, several source blocks, a
    clamped block, a node count that is not a multiple of the node tile, 160 chains: one whole chain
    tile and a part of one): identical samples."""
    model = pairwise_categorical_model(np.random.default_rng(3), 41, 3)
    reference = _run(model, 3, 160, "gather", clamp=3)
    interpreted = functools.partial(categorical_block_update, interpret=True, tile_chains=32)
    monkeypatch.setattr(pairwise_sweep, "categorical_block_update", interpreted)
    kernel = _run(model, 3, 160, "pallas", clamp=3)
    np.testing.assert_array_equal(np.asarray(kernel), np.asarray(reference))


def _potts_lattice(J: float):
    """A periodic 6 × 6 lattice of 3-state Potts nodes with coupling J on every edge and random biases:
    every node has four neighbours in the other colour, so the kernel needs no load at all."""
    lattice = lattice_2d(6, periodic=True, node_type=CategoricalNode)
    edges = lattice.edge_index
    nodes = lattice.nodes
    pairs = CategoricalEBMFactor([Block([nodes[i] for i in edges[:, 0]]), Block([nodes[i] for i in edges[:, 1]])],
                                 jnp.broadcast_to(J * jnp.eye(3, dtype=jnp.float32), (len(edges), 3, 3)))
    bias = CategoricalEBMFactor([Block(nodes)], jnp.asarray(np.random.default_rng(8).normal(0, 0.5, (36, 3)), jnp.float32))
    return [], nodes, FactorizedEBM([bias, pairs])


def _forms(model, k: int, clamp: int):
    program, _, _ = _prepared(model, k, clamp)
    return coupling_forms(program, pairwise_sweep.pairwise_tables(program))


def _random_update(rng, n: int, k: int, chains: int, sources: list[tuple[int, int, int]], dtype, spin_headed=False):
    """Operands of one block update: (bias, node ids, seeds, sources, dtype, spin-headed); each source
    is (rows, slots, categories) of random states, neighbour slots and couplings (k = 1 with
    `spin_headed`: the single Δ = θ_1 − θ_0 of a spin block)."""
    made = []
    for rows, slots, tail in sources:
        state = jnp.asarray(rng.integers(0, tail, (rows, chains)), jnp.uint8)
        neighbours = jnp.asarray(rng.integers(0, rows, (n, slots)), jnp.int32)
        made.append((state, neighbours, jnp.asarray(rng.normal(0, 0.7, (n, slots, k, tail)), jnp.float32)))
    bias = jnp.asarray(rng.normal(0, 0.5, (n, k)), jnp.float32)
    ids = jnp.asarray(rng.permutation(1000)[:n], jnp.uint32)
    seeds = jnp.asarray(rng.integers(0, 2**32, chains, dtype=np.uint64), jnp.uint32)
    return bias, ids, seeds, made, dtype, spin_headed


def test_interpreted_pair_kernel_equals_two_launches():
    """Two block updates in one launch (unequal node tiles, chain tiles, category counts and sources;
    one run a spin block with a single whole chain tile, the other with two) give each run its own
    launch's result."""
    rng = np.random.default_rng(6)
    first = _random_update(rng, 13, 1, 128, [(9, 4, 3), (20, 2, 2)], jnp.uint8, spin_headed=True)
    second = _random_update(rng, 30, 5, 256, [(17, 3, 5)], jnp.uint8)
    paired = categorical_pair_update(first, second, interpret=True)
    for run, got in zip((first, second), paired):
        want = categorical_block_update(*run[:5], spin_headed=run[5], interpret=True)
        assert got.shape == want.shape == (run[0].shape[0], run[2].shape[0])
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert int(paired[1].max()) == 4 and int(paired[0].max()) == 1


@pytest.mark.parametrize("form", [None, DIAGONAL], ids=["general", "diagonal"])
def test_interpreted_kernel_loops_over_wide_tables_with_the_unrolled_sums(form, monkeypatch):
    """Sources of 19 and 18 slots (two chunks of 8 slots in a loop, then an unrolled rest) and one of
    5 (unrolled), 4-state and spin tails: the same samples as every slot unrolled."""
    from heatbath.kernels import pallas_categorical

    tails = [(30, 19, 4), (12, 5, 4)] if form else [(30, 19, 4), (25, 18, 2), (12, 5, 4)]
    bias, ids, seeds, sources, dtype, _ = _random_update(np.random.default_rng(9), 11, 4, 64, tails, jnp.uint8)
    if form == DIAGONAL:
        sources = [(s, nb, w * jnp.eye(4, dtype=w.dtype)) for s, nb, w in sources]
    update = functools.partial(categorical_block_update, bias, ids, seeds, sources, dtype, form=form, interpret=True)
    looped = update()
    monkeypatch.setattr(pallas_categorical, "UNROLLED_SLOTS", 64)
    unrolled = update()
    np.testing.assert_array_equal(np.asarray(looped), np.asarray(unrolled))
    assert len(np.unique(np.asarray(looped))) == 4


@pytest.mark.parametrize("width", [5, 16, 17, 19, 24, 40])
def test_slot_loop_adds_every_slot_once_in_slot_order(width):
    """`_add_slots` with an order-sensitive `add` (θ ← 31·θ + d + 1 in uint32, a polynomial hash of
    the visited slots): the loop over chunks and the unrolled rest visit exactly slots 0 … width−1
    in order, as every slot unrolled does; a dropped, repeated or reordered slot changes the hash.
    (The kernel test above compares samples, which a reorder of float additions may leave equal.)"""
    from heatbath.kernels import pallas_categorical

    def add(d, theta):
        return tuple(t * jnp.uint32(31) + jnp.uint32(d) + jnp.uint32(1) for t in theta)

    want = 0
    for d in range(width):
        want = (want * 31 + d + 1) % 2**32
    start = (jnp.zeros((2, 3), jnp.uint32), jnp.ones((2, 3), jnp.uint32))
    got = jax.jit(lambda theta: pallas_categorical._add_slots(add, width, theta))(start)
    np.testing.assert_array_equal(np.asarray(got[0]), np.full((2, 3), want, np.uint32))
    offset = pow(31, width, 2**32)  # the second term started at 1: 31^width more
    np.testing.assert_array_equal(np.asarray(got[1]), np.full((2, 3), (want + offset) % 2**32, np.uint32))


def test_coupling_forms_are_read_only_from_concrete_weights():
    """General couplings: None. Zero off the diagonal: DIAGONAL (per-edge J, or one J with nodes of
    different degrees, whose padding slots must add nothing). One J and no padding: that J. Traced
    weights: None (not an error)."""
    model = pairwise_categorical_model(np.random.default_rng(3), 41, 3)
    assert set(_forms(model, 3, 3)) == {None}
    assert set(_forms(_potts_like(model), 3, 3)) == {DIAGONAL}
    one_j, _, _ = _prepared(_potts_like(model, value=0.8), 3, 3)
    tables = pairwise_sweep.pairwise_tables(one_j)
    padded = [any(np.any(cols == tables.zero_columns[b]) for _, _, cols in tables.sources[b]) for b in range(len(tables.sources))]
    assert any(padded)
    expected = tuple(DIAGONAL if p else np.float32(0.8).item() for p in padded)
    assert coupling_forms(one_j, tables) == expected
    assert _forms(_potts_lattice(0.8), 3, 0) == (np.float32(0.8).item(),) * 2

    program, _, _ = _prepared(_potts_lattice(0.8), 3, 0)
    tables = pairwise_sweep.pairwise_tables(program)
    seen = []
    jax.jit(lambda p: seen.append(coupling_forms(p, tables)) or 0)(program)
    assert seen == [(None, None)]


@pytest.mark.parametrize("case", ["per-edge diagonals", "one J, no padding"])
def test_interpreted_potts_kernel_takes_the_same_steps(case, monkeypatch):
    """Potts-like couplings through the kernel's one-load (DIAGONAL) or no-load (one J) update: the
    same samples as the kernel's general update and as the jax.numpy sweep."""
    if case == "per-edge diagonals":
        model, k, clamp = _potts_like(pairwise_categorical_model(np.random.default_rng(4), 41, 3)), 3, 3
    else:
        model, k, clamp = _potts_lattice(0.8), 3, 0
    forms = _forms(model, k, clamp)
    assert None not in forms
    reference = _run(model, k, 160, "gather", clamp=clamp)
    interpreted = functools.partial(categorical_block_update, interpret=True, tile_chains=32)
    monkeypatch.setattr(pairwise_sweep, "categorical_block_update", interpreted)
    general = _run(model, k, 160, "pallas", clamp=clamp)
    fast = _run(model, k, 160, "pallas", clamp=clamp, forms=forms)
    np.testing.assert_array_equal(np.asarray(general), np.asarray(reference))
    np.testing.assert_array_equal(np.asarray(fast), np.asarray(reference))


def _run_mixed(method: str, chains: int):
    """Samples of the spins and 3- and 4-state nodes of `mixed_pairwise_model` after a short schedule,
    from fixed chain keys and random initial states (spins as categories 0 and 1)."""
    from heatbath import BlockGibbsSpec, FactorSamplingProgram
    from test_mixed_pairwise import _dtype, _sampler, _states_of, mixed_pairwise_model

    groups, ebm = mixed_pairwise_model(np.random.default_rng(9))
    blocks = [Block(g) for g in groups]
    spec = BlockGibbsSpec(blocks, [], ebm.node_shape_dtypes)
    program = FactorSamplingProgram(spec, [_sampler(b) for b in blocks], ebm.factors, [])
    tables = pairwise_sweep.pairwise_tables(program)
    init = random_init(jax.random.key(2), blocks, chains, [_states_of(b) for b in blocks], [_dtype(b) for b in blocks])
    words = jnp.stack([jnp.arange(chains, dtype=jnp.uint32), jnp.full((chains,), 11, jnp.uint32)], 1)
    observed = [jnp.asarray(spec.node_ids(b.nodes), jnp.int32) for b in blocks]
    states = pairwise_sweep.kernel_states(tables, init)
    return pairwise_sweep._run_local(program, SamplingSchedule(3, 1, 1), tables, words, states, observed, method)


@pytest.mark.parametrize("select_tail", [2, 4], ids=["spin sources by selects", "all by selects"])
def test_interpreted_kernel_reads_spin_and_category_sources_as_jax_numpy(select_tail, monkeypatch):
    """Spins with 3- and 4-state nodes: a source's weights read per node and picked per chain by
    selects (`SELECT_TAIL`: spins by default, or every source here) add what the per-chain gathers
    add (the test above), so the kernel gives the jax.numpy sweep's samples."""
    from heatbath.kernels import pallas_categorical

    reference = _run_mixed("gather", 96)
    monkeypatch.setattr(pallas_categorical, "SELECT_TAIL", select_tail)
    interpreted = functools.partial(categorical_block_update, interpret=True, tile_chains=32)
    monkeypatch.setattr(pairwise_sweep, "categorical_block_update", interpreted)
    for got, want in zip(_run_mixed("pallas", 96), reference):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_categorical_pallas_needs_a_gpu():
    from heatbath.errors import HeatbathError

    if pallas_available():
        pytest.skip("a GPU is present: the method runs")
    with pytest.raises(HeatbathError, match="needs CUDA GPUs"):
        pairwise_sweep.chosen_method("pallas", None, _Kind("categorical"), jax.devices("cpu"), 8)


def test_tensor_methods_refuse_categorical_programs():
    from heatbath.errors import HeatbathError

    with pytest.raises(HeatbathError, match="spin programs only"):
        pairwise_sweep.chosen_method("tensor", None, _Kind("categorical"), jax.devices("cpu"), 8)


class _Kind:
    def __init__(self, kind):
        self.kind = kind


@pytest.mark.skipif(not pallas_available(), reason="the native kernel runs on a CUDA GPU")
def test_native_kernel_follows_the_jax_numpy_chain():
    model = pairwise_categorical_model(np.random.default_rng(5), 300, 5)
    reference = _run(model, 5, 512, "gather", clamp=4)
    kernel = _run(model, 5, 512, "pallas", clamp=4)
    agree = float(jnp.mean(kernel == reference))
    assert agree > 0.9999, agree


@pytest.mark.skipif(not pallas_available(), reason="the native kernel runs on a CUDA GPU")
def test_native_kernel_follows_the_jax_numpy_chain_of_a_mixed_program():
    agree = [float(jnp.mean(got == want)) for got, want in zip(_run_mixed("pallas", 1024), _run_mixed("gather", 1024))]
    assert min(agree) > 0.9999, agree


@pytest.mark.skipif(not pallas_available(), reason="the native kernel runs on a CUDA GPU")
@pytest.mark.parametrize("case", ["per-edge diagonals", "one J, no padding"])
def test_native_potts_kernel_follows_the_jax_numpy_chain(case):
    if case == "per-edge diagonals":
        model, k, clamp = _potts_like(pairwise_categorical_model(np.random.default_rng(6), 300, 5)), 5, 4
    else:
        model, k, clamp = _potts_lattice(0.8), 3, 0
    forms = _forms(model, k, clamp)
    reference = _run(model, k, 512, "gather", clamp=clamp)
    kernel = _run(model, k, 512, "pallas", clamp=clamp, forms=forms)
    agree = float(jnp.mean(kernel == reference))
    assert None not in forms and agree > 0.9999, agree


def test_blocks_beyond_int32_indices_take_the_jax_numpy_update():
    from heatbath.kernels.pallas_categorical import categorical_kernel_fits

    state = jax.ShapeDtypeStruct((1000, 128), jnp.uint8)
    neighbours = jax.ShapeDtypeStruct((1000, 4), jnp.int32)
    small = jax.ShapeDtypeStruct((1000, 4, 5, 5), jnp.float32)
    bias = jax.ShapeDtypeStruct((1000, 5), jnp.float32)
    assert categorical_kernel_fits(bias, [(state, neighbours, small)], 128)
    assert not categorical_kernel_fits(bias, [(state, neighbours, small)], 2**22)  # 1000 x 4M states
    huge = jax.ShapeDtypeStruct((2**24, 8, 16, 16), jnp.float32)  # 2^35 weights
    assert not categorical_kernel_fits(bias, [(state, neighbours, huge)], 128)


def test_known_forms_are_read_once_per_set_of_immutable_weights(monkeypatch):
    """`known_coupling_forms` reads jax Array weights once per set of arrays (a loop over one program
    copies them from the GPU once), new arrays again, and numpy weights (mutable) every time."""
    from heatbath.kernels import coupling_structure

    reads = []
    read = coupling_structure.coupling_forms
    monkeypatch.setattr(coupling_structure, "coupling_forms", lambda p, t: reads.append(1) or read(p, t))
    program, _, _ = _prepared(_potts_lattice(0.8), 3, 0)
    tables = pairwise_sweep.pairwise_tables(program)
    first = coupling_structure.known_coupling_forms(program, tables)
    assert coupling_structure.known_coupling_forms(program, tables) == first and len(reads) == 1
    other, _, _ = _prepared(_potts_lattice(0.5), 3, 0)
    assert coupling_structure.known_coupling_forms(other, pairwise_sweep.pairwise_tables(other)) == (0.5, 0.5)
    assert len(reads) == 2
    mutable = jax.tree.map(lambda x: np.asarray(x) if isinstance(x, jax.Array) else x, program)
    coupling_structure.known_coupling_forms(mutable, tables)
    coupling_structure.known_coupling_forms(mutable, tables)
    assert len(reads) == 4


def test_batched_call_passes_the_forms_it_reads_on_gpus(monkeypatch):
    """`sample_states_batched` reads the forms of concrete weights before its compiled call (where
    they would be traced) when the kernel runs, as DIAGONAL rather than one J (a new J must not
    compile again); on CPUs it reads nothing."""
    from heatbath.kernels import batched, coupling_structure

    seen = []
    monkeypatch.setattr(batched, "_run_pairwise", lambda *args: seen.append(args[-2]))  # (..., forms, dtypes)
    program, blocks, _ = _prepared(_potts_lattice(0.8), 3, 0)
    init = [jnp.zeros((4, len(block)), jnp.uint8) for block in blocks]
    call = lambda: batched.sample_states_batched(jax.random.key(0), program, SamplingSchedule(1, 1, 1), init, [], blocks)  # noqa: E731
    for gpus in (False, True):  # whatever machine the test runs on
        monkeypatch.setattr(coupling_structure, "pallas_runs_on", lambda devices, gpus=gpus: gpus)
        call()
    assert seen == [None, (DIAGONAL, DIAGONAL)]


def test_one_j_is_a_constant_only_inside_jit(monkeypatch):
    """A THRML-style call inside `jax.jit` keeps one J (its jit compiles per program anyway); an eager
    call takes DIAGONAL, so its compiled sweep serves the next J too."""
    from heatbath import sample_states
    from heatbath.kernels import coupling_structure, dispatch

    seen = []
    run = dispatch.run_pairwise
    monkeypatch.setattr(coupling_structure, "pallas_runs_on", lambda devices: True)
    monkeypatch.setattr(dispatch, "run_pairwise", lambda *a, **k: seen.append(k["forms"]) or run(*a, **{**k, "forms": None}))
    program, blocks, _ = _prepared(_potts_lattice(0.8), 3, 0)
    init = [jnp.zeros((len(block),), jnp.uint8) for block in blocks]
    schedule = SamplingSchedule(1, 1, 1)
    sample_states(jax.random.key(0), program, schedule, init, [], blocks)
    jax.jit(lambda k: sample_states(k, program, schedule, init, [], blocks))(jax.random.key(0))
    assert seen[0] == (DIAGONAL, DIAGONAL)
    assert seen[-1] == (np.float32(0.8).item(),) * 2
