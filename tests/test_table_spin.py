"""The pattern-table spin update (`kernels.table_spin`, CUDA C through `kernels.cuda_runtime`): its
tables hold each group's share of the field, it takes the gather sweep's steps, it samples the exact
distribution, and the native kernel (on a CUDA GPU) gives its jax.numpy twin's samples."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import pytest

from heatbath import Block, SamplingSchedule, SpinNode
from heatbath.errors import HeatbathError
from heatbath.graphs import color_blocks
from heatbath.kernels import pairwise_sweep, table_spin
from heatbath.kernels.batched import sample_states_batched
from heatbath.kernels.counter_rng import fold16, mix32, mix32_tail
from heatbath.kernels.cuda_runtime import nvrtc_available
from heatbath.kernels.pairwise_tables import block_couplings, pairwise_tables, real_slots
from heatbath.kernels.pallas_backend import pallas_available
from heatbath.models import FactorizedEBM, SpinEBMFactor
from test_exact_agreement import N_WARMUP, _program
from test_exact_agreement import _check as check_against_exact
from test_pairwise_kernels import pairwise_spin_model
from test_tensor_spin import (
    _run,
    _spin_glass,
    check_categorical_programs_are_refused,
    check_samples_do_not_depend_on_the_device_count,
)

NATIVE = pallas_available() and nvrtc_available()
GPU_METHOD = "table" if NATIVE else "table-jnp"


def test_folding_hash_and_seed_gives_the_same_words():
    rng = np.random.default_rng(0)
    a, b = (jnp.asarray(rng.integers(0, 2**32, 1000, dtype=np.uint64).astype(np.uint32)) for _ in range(2))
    np.testing.assert_array_equal(mix32(a ^ b), mix32_tail(fold16(a) ^ fold16(b)))


def test_layouts_hold_every_neighbour_once_in_a_group_of_five():
    spins, ebm, program = _spin_glass(300, 1)
    tables = pairwise_tables(program)
    layouts = table_spin.table_layouts(tables)
    offsets = np.cumsum([0] + list(tables.block_sizes))
    scratch = offsets[-1]
    for b, layout in enumerate(layouts):
        n = tables.block_sizes[b]
        assert sorted(layout.order.tolist()) == list(range(n))  # a permutation of the block
        assert layout.neighbours.shape == (n, 5 * layout.groups)
        real = real_slots(tables, b)
        flat = np.concatenate([offsets[src] + nb for src, nb, _ in tables.sources[b]], axis=1)
        assert layout.groups == -(-real.sum(1).max() // 5)
        for slot, i in enumerate(layout.order):
            used = layout.neighbours[slot] != scratch
            assert sorted(layout.neighbours[slot, used].tolist()) == sorted(flat[i, real[i]].tolist())
            assert (layout.picks[slot, ~used] == real.shape[1]).all()  # padding reads the zero column


def test_tables_hold_each_groups_share_of_the_field():
    spins, ebm, program = _spin_glass(200, 2)
    tables = pairwise_tables(program)
    layouts = table_spin.table_layouts(tables)
    params = [block_couplings(program, tables, b) for b in range(len(tables.sources))]
    blocks = table_spin.table_blocks(tables, layouts, params)
    rng = np.random.default_rng(3)
    for layout, block, (bias, couplings) in zip(layouts, blocks, params):
        w = np.concatenate([np.asarray(c, np.float64) for c in couplings] + [np.zeros((len(bias), 1))], axis=1)
        slots = w[layout.order[:, None], layout.picks].reshape(len(layout.order), layout.groups, 5)
        spins_up = rng.random((len(layout.order), layout.groups, 5)) < 0.5
        patterns = (spins_up * (1 << np.arange(5))).sum(-1)  # [n, G]
        got = np.take_along_axis(np.asarray(block.tables, np.float64), patterns[:, :, None], 2)[:, :, 0].sum(1)
        field = np.asarray(bias, np.float64)[layout.order] + (slots * np.where(spins_up, 1.0, -1.0)).sum((1, 2))
        np.testing.assert_allclose(got, table_spin.SCALE * field, rtol=0, atol=1e-5 * (1 + np.abs(field).max()))


def test_table_update_takes_the_gather_sweeps_steps():
    """Same keys and model: the same samples (a flip could differ only where the field's rounding in
    another order decides a near-tie comparison)."""
    spins, ebm, program = _spin_glass(400, 4)
    schedule = SamplingSchedule(3, 3, 2)
    gather = _run(program, schedule, 64, [spins], "gather")
    table = _run(program, schedule, 64, [spins], "table-jnp")
    assert np.mean(gather[0] == table[0]) > 0.9999


@pytest.mark.skipif(not NATIVE, reason="the native kernel runs on a CUDA GPU with NVRTC")
def test_native_kernel_gives_the_same_samples_as_jax_numpy():
    spins, ebm, program = _spin_glass(2000, 6)
    schedule = SamplingSchedule(3, 2, 2)
    for chains in (48, 1000, 4000):  # 1, 2 and 4 words a thread; the last tile of each partly idle
        reference = _run(program, schedule, chains, [spins], "table-jnp")
        kernel = _run(program, schedule, chains, [spins], "table")
        assert np.mean(reference[0] == kernel[0]) > 0.9999


def test_few_chains_give_threads_fewer_words():
    assert [table_spin.words_for(c) for c in (16, 512, 528, 2048, 2064, 65536)] == [1, 1, 2, 2, 4, 4]


@pytest.mark.skipif(not NATIVE, reason="the native kernel runs on a CUDA GPU with NVRTC")
def test_threads_of_one_two_or_four_words_give_the_same_samples():
    spins, ebm, program = _spin_glass(2000, 7)
    tables = pairwise_tables(program)
    params = [block_couplings(program, tables, b) for b in range(len(tables.sources))]
    blocks = table_spin.table_blocks(tables, table_spin.table_layouts(tables), params)
    chains = 1008  # a multiple of 16 that no thread count divides into whole warps
    state = table_spin.table_state([jnp.where(jax.random.bernoulli(jax.random.key(8), 0.5, (tables.block_sizes[b], chains)),
                                              1, -1).astype(jnp.int8) for b in range(len(blocks))])
    seeds = table_spin.fold_seeds(jax.random.bits(jax.random.key(9), (len(blocks), chains), jnp.uint32))
    results = []
    for words in (1, 2, 4):
        out = state
        for b, block in enumerate(blocks):
            out = table_spin.table_block_update(block, out, seeds, b, words=words)
        results.append(np.asarray(out))
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])
    assert np.mean(results[0] != np.asarray(state)) > 0.1  # the updates did flip spins


def test_bit_state_packs_chain_32w_plus_c_into_bit_c_of_word_w():
    rng = np.random.default_rng(10)
    states = [jnp.asarray(rng.choice([-1, 1], (n, 64)), jnp.int8) for n in (3, 5)]
    packed = np.asarray(table_spin.table_state(states, packed=True))
    up = np.concatenate([np.asarray(s) > 0 for s in states] + [np.zeros((1, 64), bool)])
    assert packed.dtype == np.uint32 and packed.shape == (9, 2)
    for c in range(64):
        np.testing.assert_array_equal((packed[:, c // 32] >> (c % 32)) & 1, up[:, c])
    ids = jnp.asarray([4, 0, 8])
    np.testing.assert_array_equal(np.asarray(table_spin.spins_up(table_spin.table_state(states, packed=True), ids)), up[[4, 0, 8]])
    np.testing.assert_array_equal(np.asarray(table_spin.spins_up(table_spin.table_state(states), ids)), up[[4, 0, 8]])


def test_packed_samples_unpack_chain_major():
    """`chain_major_spins`: sample s of row r of chain 32 w + c is bit c of word w of that row."""
    words = np.random.default_rng(11).integers(0, 2**32, (3, 5, 2), dtype=np.uint32)  # [samples, rows, words]
    out = np.asarray(table_spin.chain_major_spins(jnp.asarray(words)))
    assert out.shape == (64, 3, 5) and out.dtype == np.bool_
    for c in range(64):
        np.testing.assert_array_equal(out[c], (words[:, :, c // 32] >> (c % 32)) & 1)


def test_bit_state_from_bits_from_chains_in_whole_words():
    assert not table_spin.packs(table_spin.BITS_FROM - 32, 100) and table_spin.packs(table_spin.BITS_FROM, 100)
    assert not table_spin.packs(table_spin.BITS_FROM + 16, 100)  # not whole words
    assert not table_spin.packs(2**20, 2**18)  # word offsets past 2^32
    assert table_spin.chain_multiple(table_spin.BITS_FROM - 1) == table_spin.CHAIN_MULTIPLE
    assert table_spin.chain_multiple(table_spin.BITS_FROM) == 32


def test_bit_seed_order_puts_a_warps_seeds_side_by_side():
    """Position (q · words + w) · 4 + r holds chain 32 w + 4 q + r's seed, and m copies' seeds laid
    side by side are the bit order of the tiled chains (copy i's chain c: i · chains + c)."""
    chains, words = 96, 3
    order = table_spin.bit_seed_order(chains)
    q, w, r = np.meshgrid(np.arange(8), np.arange(words), np.arange(4), indexing="ij")
    np.testing.assert_array_equal(order[((q * words + w) * 4 + r).ravel()], (32 * w + 4 * q + r).ravel())
    assert sorted(order) == list(range(chains))
    seeds = np.arange(2 * 5 * chains, dtype=np.uint32).reshape(2, 5, chains)  # [copies, updates, chains], chain order
    tiled = np.concatenate([seeds[0], seeds[1]], axis=1)
    per_copy = seeds[:, :, order]
    np.testing.assert_array_equal(table_spin.side_by_side_bit_seeds(jnp.asarray(per_copy)),
                                  tiled[:, table_spin.bit_seed_order(2 * chains)])
    with pytest.raises(ValueError, match="whole words"):
        table_spin.bit_seed_order(100)


def test_runs_on_the_bit_state_take_the_byte_states_steps(monkeypatch):
    """The table route with the bit state (from 64 chains here; 100 chains padded to 128) gives the
    byte state's samples: the same twin arithmetic, and the state packed, observed and unpacked in
    place of the bytes."""
    spins, ebm, program = _spin_glass(300, 11)
    schedule = SamplingSchedule(2, 3, 2)
    calls = _recording_twin(monkeypatch)
    bytes_ = _run(program, schedule, 100, [spins], "table-jnp")
    monkeypatch.setattr(table_spin, "BITS_FROM", 64)
    bits = _run(program, schedule, 100, [spins], "table-jnp")
    assert set(calls) == {jnp.dtype(jnp.uint8), jnp.dtype(jnp.uint32)}
    assert bits[0].shape == (100, 3, 300)
    np.testing.assert_array_equal(bits[0], bytes_[0])


def _recording_twin(monkeypatch) -> list:
    """The dtypes of the flat states the table twin updates, recorded as the route calls it."""
    calls, twin = [], table_spin.table_block_update_jnp
    monkeypatch.setattr(pairwise_sweep, "table_block_update_jnp", lambda b, state, *a: calls.append(state.dtype) or twin(b, state, *a))
    return calls


def test_bit_state_on_several_devices_and_in_side_by_side_sweeps(monkeypatch):
    """The bit state split over 1, 2 and 3 CPU devices (250 chains, each device's share padded to
    whole words), and tiled for independent sweeps run side by side (free nodes reading only clamped
    ones) or in the sweep loop: the byte state's samples every time."""
    from test_independent_sweeps import _bipartite, _both_ways, _states

    spins, ebm, program = _spin_glass(200, 21)
    schedule = SamplingSchedule(2, 3, 2)
    calls = _recording_twin(monkeypatch)
    reference = _run(program, schedule, 250, [spins], "table-jnp")
    bipartite, free, clamped = _bipartite("spin", 10, 4, 1)
    rng = np.random.default_rng(2)
    init, clamp = _states("spin", rng, 70, free), _states("spin", rng, 70, [clamped])

    def independent():
        out = sample_states_batched(jax.random.key(3), bipartite, SamplingSchedule(3, 40, 3), init, clamp,
                                    free + [clamped], method="table-jnp")
        return [np.asarray(x) for x in out]

    jax.clear_caches()
    byte_samples = independent()
    assert set(calls) == {jnp.dtype(jnp.uint8)}
    monkeypatch.setattr(table_spin, "BITS_FROM", 64)
    for d in (1, 2, 3):
        out = _run(program, schedule, 250, [spins], "table-jnp", devices=jax.devices("cpu")[:d])
        np.testing.assert_array_equal(out[0], reference[0])
    monkeypatch.setattr(table_spin, "BITS_FROM", 32)  # the side-by-side call's 32 chains a copy run the bit state too
    side_by_side, loop = _both_ways(monkeypatch, independent)
    for want, a, b in zip(byte_samples, side_by_side, loop):
        np.testing.assert_array_equal(a, want)
        np.testing.assert_array_equal(b, want)
    assert jnp.dtype(jnp.uint32) in calls


def _regular_spin_glass(degree, n, seed):
    """A spin glass on a random `degree`-regular graph of n spins: every node's field is the same
    number of tables of five slots (`_spin_glass`'s random graph gives nodes two or three)."""
    rng = np.random.default_rng(seed)
    spins = [SpinNode(f"r{i}") for i in range(n)]
    pairs = list(nx.random_regular_graph(degree, n, seed=seed).edges())
    ebm = FactorizedEBM([
        SpinEBMFactor([Block(spins)], jnp.asarray(rng.normal(0, 0.6, n), jnp.float32)),
        SpinEBMFactor([Block([spins[a] for a, _ in pairs]), Block([spins[b] for _, b in pairs])],
                      jnp.asarray(rng.normal(0, 0.6 / np.sqrt(degree / 4), len(pairs)), jnp.float32)),
    ])
    return spins, ebm, _program(ebm, color_blocks(ebm), [], 2)


@pytest.mark.skipif(not NATIVE, reason="the native kernel runs on a CUDA GPU with NVRTC")
@pytest.mark.parametrize("model, groups", [(lambda: _spin_glass(700, 12), {2, 3}), (lambda: _regular_spin_glass(4, 700, 14), {1}),
                                           (lambda: _regular_spin_glass(22, 300, 15), {5}), (lambda: _regular_spin_glass(40, 200, 16), {8}),
                                           (lambda: _regular_spin_glass(14, 1400, 17), {3})],
                         ids=["two or three tables", "one table", "five tables", "eight tables", "three tables, 28-242 a colour"])
# a part-filled tile of 32 words; from BIT_LOOP_FROM words on (the second) several tiles a warp, one
# part-filled, the pair-table form for nodes of two tables or more and the full table for three
# (colours of more nodes than an H200's 132 SMs, whole generations, and of fewer, split passes)
@pytest.mark.parametrize("chains", [1056, 33 * 1024 + 64])
def test_bit_kernel_takes_exactly_the_byte_kernels_steps(chains, model, groups):
    """The bit kernel (`table_bits.cu`) and the byte kernel run the same float arithmetic per chain:
    after several sweeps of a spin glass, equal states bit for bit, for nodes of one to eight tables
    (each number of tables compiles a kernel of its own)."""
    spins, ebm, program = model()
    tables = pairwise_tables(program)
    params = [block_couplings(program, tables, b) for b in range(len(tables.sources))]
    blocks = table_spin.table_blocks(tables, table_spin.table_layouts(tables), params)
    assert {int(b.tables.shape[1]) for b in blocks} == groups
    up = [jax.random.bernoulli(jax.random.key(b), 0.5, (n, chains)) for b, n in enumerate(tables.block_sizes)]
    seeds = table_spin.fold_seeds(jax.random.bits(jax.random.key(13), (len(blocks), chains), jnp.uint32))
    bit_seeds = seeds[:, table_spin.bit_seed_order(chains)]  # the bit kernel's layout of the same seeds
    byte_state, bit_state = table_spin.table_state(up), table_spin.table_state(up, packed=True)
    for _ in range(3):
        for b, block in enumerate(blocks):
            byte_state = table_spin.table_block_update(block, byte_state, seeds, b)
            bit_state = table_spin.table_block_update(block, bit_state, bit_seeds, b)
    rows = jnp.arange(byte_state.shape[0])
    np.testing.assert_array_equal(np.asarray(table_spin.spins_up(bit_state, rows)), np.asarray(byte_state) > 0)
    assert np.mean(np.asarray(byte_state[:-1] > 0) != np.concatenate([np.asarray(u) for u in up])) > 0.1


def _table_final_states(program, init, blocks, clamp_values, seed):
    schedule = SamplingSchedule(N_WARMUP, 1, 1)
    out = sample_states_batched(jax.random.key(seed), program, schedule, init, clamp_values, blocks, method=GPU_METHOD)
    return [np.asarray(x[:, 0]) for x in out]


def _dense_spin_glass(seed):
    """12 spins with 40 random couplings: most nodes have more than five neighbours (two tables)."""
    rng = np.random.default_rng(seed)
    spins, cats, ebm = pairwise_spin_model(rng, 12)
    program = _program(ebm, color_blocks(ebm), [], 2)
    assert max(layout.groups for layout in table_spin.table_layouts(pairwise_tables(program))) >= 2
    return spins, cats, ebm


def test_spin_glass_matches_enumeration():
    spins, cats, ebm = _dense_spin_glass(43)
    check_against_exact(ebm, spins, cats, 2, seed=43, sample=_table_final_states)


def test_clamped_spin_glass_matches_enumeration():
    spins, cats, ebm = _dense_spin_glass(47)
    check_against_exact(ebm, spins, cats, 2, clamp_nodes=spins[::4], seed=47, sample=_table_final_states)


def test_samples_do_not_depend_on_the_device_count():
    check_samples_do_not_depend_on_the_device_count("table-jnp")


def test_a_node_with_more_than_forty_neighbours_is_refused_with_the_fix():
    from heatbath import SpinNode
    from heatbath.models import IsingEBM, IsingSamplingProgram

    hub, leaves, others = SpinNode(), [SpinNode() for _ in range(41)], [SpinNode() for _ in range(100)]
    ebm = IsingEBM([hub] + leaves + others, [(hub, leaf) for leaf in leaves], jnp.zeros(142), jnp.full(41, 0.1),
                   jnp.asarray(1.0))
    program = IsingSamplingProgram(ebm, [Block([hub]), Block(leaves + others)], [])
    tables = pairwise_tables(program)
    assert table_spin.table_layouts(tables)[0] is None
    assert not pairwise_sweep.table_path_applies(program, tables)
    init = [jnp.zeros((4, 1), bool), jnp.zeros((4, 141), bool)]
    with pytest.raises(HeatbathError, match="more than 40 neighbours"):
        sample_states_batched(jax.random.key(0), program, SamplingSchedule(1, 1, 1), init, [], [Block([hub])],
                              method="table-jnp")


def test_table_methods_refuse_categorical_programs_and_missing_gpus():
    check_categorical_programs_are_refused("table-jnp")
    spins, ebm, program = _spin_glass(20, 9)
    init = [jnp.zeros((4, len(b)), bool) for b in program.gibbs_spec.free_blocks]
    if not NATIVE:
        with pytest.raises(HeatbathError, match="NVRTC"):
            sample_states_batched(jax.random.key(0), program, SamplingSchedule(1, 1, 1), init, [], [Block(spins)],
                                  method="table")


def test_auto_takes_the_table_kernel_on_gpus_with_nvrtc(monkeypatch):
    """"auto" runs the table kernel for any chain count where NVRTC compiles it, so a chain's samples
    never depend on the device count; without NVRTC it keeps the tensor or gather path."""
    spins, ebm, program = _spin_glass(40, 13)
    tables = pairwise_tables(program)
    monkeypatch.setattr(pairwise_sweep, "pallas_runs_on", lambda devices: True)
    cpus = jax.devices("cpu")
    for available, expected in ((True, "table"), (False, "gather")):
        monkeypatch.setattr(pairwise_sweep, "nvrtc_available", lambda: available)
        for n_devices in (1, 2, 4):
            assert pairwise_sweep.chosen_method("auto", program, tables, tuple(cpus[:n_devices]), 1000) == expected


def test_blocks_over_the_ordering_limit_keep_their_order_and_their_samples(monkeypatch):
    spins, ebm, program = _spin_glass(120, 15)
    schedule = SamplingSchedule(2, 2, 1)
    ordered = _run(program, schedule, 16, [spins], "table-jnp")
    monkeypatch.setattr(table_spin, "ORDERED_NODES_LIMIT", 3)
    table_spin.table_layouts.cache_clear()
    try:
        layouts = table_spin.table_layouts(pairwise_tables(program))
        assert all((layout.order == np.arange(len(layout.order))).all() for layout in layouts)
        np.testing.assert_array_equal(_run(program, schedule, 16, [spins], "table-jnp")[0], ordered[0])
    finally:
        table_spin.table_layouts.cache_clear()


def test_cuda_c_kernels_stand_down_when_disabled_or_newer_than_the_driver(monkeypatch):
    """HEATBATH_CUDA_C=0 turns them off, and an NVRTC of a newer CUDA major version than the driver
    (whose PTX the driver could not load) is not used; "auto" then keeps the tensor or gather path."""
    from heatbath.kernels import cuda_runtime

    monkeypatch.setattr(cuda_runtime, "_nvrtc", lambda: object())
    monkeypatch.setattr(cuda_runtime, "_kernel_call_lib", lambda: object())
    monkeypatch.setattr(cuda_runtime, "compile_ptx", lambda *args: "ptx")
    monkeypatch.setattr(cuda_runtime, "compute_capability", lambda: 90)
    cases = [("1", 12090, 13000, False), ("1", 12040, 12090, True), ("1", 13000, 12090, True), ("1", None, 13000, True),
             ("0", 13000, 12090, False)]
    for switch, driver, nvrtc, expected in cases:
        monkeypatch.setenv("HEATBATH_CUDA_C", switch)
        monkeypatch.setattr(cuda_runtime, "_driver_version", lambda: driver)
        monkeypatch.setattr(cuda_runtime, "nvrtc_version", lambda: nvrtc)
        cuda_runtime.nvrtc_available.cache_clear()
        assert cuda_runtime.nvrtc_available() is expected, (switch, driver, nvrtc)
    cuda_runtime.nvrtc_available.cache_clear()
