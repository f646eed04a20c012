"""The tensor-core spin update (`kernels.tensor_spin`): its fixed-point field is as accurate as a float32
sum, it takes the same steps as the gather sweep, the Pallas kernel (interpreted here, native on a
GPU) gives the same samples as its jax.numpy twin, and it samples the exact distribution."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from heatbath import Block, SamplingSchedule
from heatbath.errors import HeatbathError
from heatbath.graphs import color_blocks
from heatbath.kernels import pairwise_sweep
from heatbath.kernels.batched import chain_block_states, chain_words_from_key, sample_states_batched
from heatbath.kernels.pairwise_tables import block_couplings, pairwise_tables
from heatbath.kernels.pallas_backend import pallas_available
from heatbath.kernels.tensor_tables import LARGEST_CODE, TILE_ROWS, coupling_digits, tensor_tiles
from test_exact_agreement import N_WARMUP, _program
from test_exact_agreement import _check as check_against_exact
from test_pairwise_kernels import pairwise_spin_model

GPU_METHOD = "tensor" if pallas_available() else "tensor-jnp"


def _run(program, schedule, chains, observed_nodes, method, clamp=(), seed=3, devices=None):
    spec = program.gibbs_spec
    rng = np.random.default_rng(seed)
    free = [jnp.asarray(rng.random((chains, len(b))) < 0.5) for b in spec.free_blocks]
    states = chain_block_states(program, free, list(clamp), chains)
    observed = [np.asarray(spec.node_ids(nodes), np.int32) for nodes in observed_nodes]
    words = chain_words_from_key(jax.random.key(seed), chains)
    devices = jax.devices()[:1] if devices is None else devices
    out = pairwise_sweep.run_pairwise(program, schedule, words, states, observed, devices=devices, method=method)
    return [np.asarray(x) for x in out]


def _spin_glass(n, seed):
    spins, _, ebm = pairwise_spin_model(np.random.default_rng(seed), n)
    return spins, ebm, _program(ebm, color_blocks(ebm), [], 2)


def test_fixed_point_field_is_as_accurate_as_a_float32_sum():
    spins, ebm, program = _spin_glass(300, 1)
    tables = pairwise_tables(program)
    tiles = tensor_tiles(tables)
    rng = np.random.default_rng(2)
    offsets = np.cumsum([0] + list(tables.block_sizes))
    flat_state = rng.choice([-1.0, 1.0], (offsets[-1], 16))
    for b, block in enumerate(tiles):
        bias, couplings = block_couplings(program, tables, b)
        w = np.concatenate([np.asarray(c, np.float64) for c in couplings], axis=1)
        neighbours = np.concatenate([offsets[src] + nb for src, nb, _ in tables.sources[b]], axis=1)
        exact = np.einsum("nd,ndc->nc", w, flat_state[neighbours])
        float32 = np.zeros(exact.shape, np.float32)
        for d in range(w.shape[1]):
            float32 += w[:, d, None].astype(np.float32) * flat_state[neighbours[:, d]].astype(np.float32)
        digits, scale = coupling_digits(block, jnp.asarray(w, jnp.float32))
        codes = np.tensordot(np.asarray(digits, np.int64), [65536, 256, 1], axes=([1], [0]))  # [T, R, K]
        assert np.abs(codes).max() <= LARGEST_CODE
        sums = np.einsum("trk,tkc->trc", codes, flat_state[block.union].astype(np.int64))
        fixed = sums * np.asarray(scale, np.float64)[:, :, None]
        rows = block.rows[block.rows >= 0]
        got = fixed[block.rows >= 0]
        assert block.rows.shape[1] == TILE_ROWS and sorted(rows.tolist()) == list(range(tables.block_sizes[b]))
        fixed_error = np.abs(got - exact[rows]).max()
        float32_error = np.abs(float32 - exact).max()
        assert fixed_error <= max(float32_error, 1e-6), (fixed_error, float32_error)


def test_tensor_update_takes_the_gather_sweeps_steps():
    """Same keys and model: the same samples (a flip could differ only where the field's rounding
    decides a near-tie comparison, which these 64 chains x 400 spins x 7 sweeps never hit)."""
    spins, ebm, program = _spin_glass(400, 4)
    schedule = SamplingSchedule(3, 3, 2)
    gather = _run(program, schedule, 64, [spins], "gather")
    tensor = _run(program, schedule, 64, [spins], "tensor-jnp")
    assert np.mean(gather[0] == tensor[0]) > 0.9999


def test_pallas_kernel_gives_the_same_samples_as_jax_numpy():
    spins, ebm, program = _spin_glass(60, 5)
    schedule = SamplingSchedule(2, 2, 1)
    reference = _run(program, schedule, 32, [spins], "tensor-jnp")
    kernel = _run(program, schedule, 32, [spins], "tensor-interpret")
    np.testing.assert_array_equal(reference[0], kernel[0])


@pytest.mark.skipif(not pallas_available(), reason="the native kernel runs on a CUDA GPU")
def test_native_kernel_gives_the_same_samples_as_jax_numpy():
    spins, ebm, program = _spin_glass(2000, 6)
    schedule = SamplingSchedule(3, 2, 2)
    reference = _run(program, schedule, 256, [spins], "tensor-jnp")
    kernel = _run(program, schedule, 256, [spins], "tensor")
    assert np.mean(reference[0] == kernel[0]) > 0.9999


def _tensor_final_states(program, init, blocks, clamp_values, seed):
    schedule = SamplingSchedule(N_WARMUP, 1, 1)
    out = sample_states_batched(jax.random.key(seed), program, schedule, init, clamp_values, blocks, method=GPU_METHOD)
    return [np.asarray(x[:, 0]) for x in out]


def test_spin_glass_matches_enumeration():
    spins, cats, ebm = pairwise_spin_model(np.random.default_rng(43), 12)
    check_against_exact(ebm, spins, cats, 2, seed=43, sample=_tensor_final_states)


def test_clamped_spin_glass_matches_enumeration():
    spins, cats, ebm = pairwise_spin_model(np.random.default_rng(47), 12)
    check_against_exact(ebm, spins, cats, 2, clamp_nodes=spins[::4], seed=47, sample=_tensor_final_states)


def check_samples_do_not_depend_on_the_device_count(method: str):
    """The same chains on one and on four (forced host) devices give the same samples with `method`."""
    spins, ebm, program = _spin_glass(50, 8)
    schedule = SamplingSchedule(3, 2, 1)
    runs = [_run(program, schedule, 40, [spins], method, devices=jax.devices("cpu")[:d]) for d in (1, 4)]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])


def test_samples_do_not_depend_on_the_device_count():
    check_samples_do_not_depend_on_the_device_count("tensor-jnp")


def test_bad_methods_are_refused_with_the_fix():
    spins, ebm, program = _spin_glass(20, 9)
    init = [jnp.zeros((4, len(b)), bool) for b in program.gibbs_spec.free_blocks]
    schedule = SamplingSchedule(1, 1, 1)
    with pytest.raises(HeatbathError, match="method must be one of"):
        sample_states_batched(jax.random.key(0), program, schedule, init, [], [Block(spins)], method="tensors")
    if not pallas_available():
        with pytest.raises(HeatbathError, match="CUDA GPUs"):
            sample_states_batched(jax.random.key(0), program, schedule, init, [], [Block(spins)], method="tensor")


def test_dense_layers_stay_on_the_matrix_product_path():
    """An RBM layer read as a dense matrix product is not tiled: "auto" keeps it on the gather sweep,
    and asking for the tensor path says why it cannot."""
    from heatbath import SpinNode
    from heatbath.models import IsingEBM, IsingSamplingProgram

    rng = np.random.default_rng(11)
    visible, hidden = [SpinNode() for _ in range(6)], [SpinNode() for _ in range(40)]
    edges = [(v, h) for v in visible for h in hidden]
    ebm = IsingEBM(visible + hidden, edges, jnp.zeros(46), jnp.asarray(rng.normal(0, 0.3, len(edges)), jnp.float32),
                   jnp.asarray(1.0))
    program = IsingSamplingProgram(ebm, [Block(visible), Block(hidden)], [])
    assert not pairwise_sweep.tensor_path_applies(program, pairwise_tables(program))
    init = [jnp.zeros((4, 6), bool), jnp.zeros((4, 40), bool)]
    with pytest.raises(HeatbathError, match="dense layers"):
        sample_states_batched(jax.random.key(0), program, SamplingSchedule(1, 1, 1), init, [], [Block(visible)],
                              method="tensor-jnp")


def test_a_hub_too_wide_for_one_tile_stays_on_the_gather_path():
    """A node with 600 neighbours would need a 600-wide product: not tiled (MAX_UNION = 512). Its
    neighbours share their block with 700 uncoupled nodes, so it is not a dense layer either."""
    from heatbath import SpinNode
    from heatbath.models import IsingEBM, IsingSamplingProgram

    hub, leaves, others = SpinNode(), [SpinNode() for _ in range(600)], [SpinNode() for _ in range(700)]
    ebm = IsingEBM([hub] + leaves + others, [(hub, leaf) for leaf in leaves], jnp.zeros(1301), jnp.full(600, 0.1),
                   jnp.asarray(1.0))
    program = IsingSamplingProgram(ebm, [Block([hub]), Block(leaves + others)], [])
    tables = pairwise_tables(program)
    assert tables.dense == ((False,), (False,))
    tiles = tensor_tiles(tables)
    assert tiles[0] is None and tiles[1] is not None  # the other block's tiles read only the hub
    assert not pairwise_sweep.tensor_path_applies(program, tables)


def test_blocks_over_the_tiling_limit_stay_on_the_gather_path(monkeypatch):
    from heatbath.kernels import tensor_tables

    spins, ebm, program = _spin_glass(100, 12)
    monkeypatch.setattr(tensor_tables, "TILED_ROWS_LIMIT", 10)
    tensor_tables.tensor_tiles.cache_clear()
    assert not pairwise_sweep.tensor_path_applies(program, pairwise_tables(program))
    tensor_tables.tensor_tiles.cache_clear()


def test_many_strong_neighbours_cannot_overflow_the_integer_field():
    """400 neighbours with couplings ±1 and aligned spins: Σ q s would reach 400 · 2**23 > 2**31 with
    the plain per-node scale; the coarser scale keeps the integer field exact and in range."""
    from heatbath.kernels.tensor_tables import block_tiles

    neighbours = np.arange(1, 401)[None, :]
    tiles = block_tiles(neighbours, np.ones((1, 400), bool))
    signs = np.where(np.arange(400) % 3 == 0, -1.0, 1.0)
    digits, scale = coupling_digits(tiles, jnp.asarray(signs[None, :], jnp.float32))
    codes = np.tensordot(np.asarray(digits, np.int64), [65536, 256, 1], axes=([1], [0]))[0, 0]  # [K]
    spins = np.zeros(tiles.union.shape[1])
    spins[: 400] = signs  # every term +1: the largest field
    total = int((codes * spins).sum())
    assert abs(total) < 2**31 - 1
    as_int32 = int(np.int32(np.sum((codes * spins).astype(np.int64)).astype(np.int32)))
    assert as_int32 == total  # no wrap-around
    assert abs(total * float(scale[0, 0]) - 400.0) < 400 * 2**-20


def test_auto_decides_on_the_total_chain_count_not_the_split(monkeypatch):
    """On GPUs "auto" takes the tensor path from TENSOR_MIN_CHAINS chains in a call, however many
    devices share them, so a chain's samples never depend on the device count."""
    spins, ebm, program = _spin_glass(40, 13)
    tables = pairwise_tables(program)
    monkeypatch.setattr(pairwise_sweep, "pallas_runs_on", lambda devices: True)
    monkeypatch.setattr(pairwise_sweep, "nvrtc_available", lambda: False)  # where it is, the table kernel runs
    cpus = jax.devices("cpu")
    threshold = pairwise_sweep.TENSOR_MIN_CHAINS
    for n_devices in (1, 2, 4):
        devices = tuple(cpus[:n_devices])
        assert pairwise_sweep.chosen_method("auto", program, tables, devices, threshold + 1000) == "tensor"
        assert pairwise_sweep.chosen_method("auto", program, tables, devices, threshold - 1) == "gather"


def check_categorical_programs_are_refused(method: str):
    """A spin-only `method` on a categorical program raises and says so."""
    from test_pairwise_kernels import pairwise_categorical_model

    _, cats, ebm = pairwise_categorical_model(np.random.default_rng(14), 8, 3)
    program = _program(ebm, color_blocks(ebm), [], 3)
    init = [jnp.zeros((4, len(b)), jnp.uint8) for b in program.gibbs_spec.free_blocks]
    with pytest.raises(HeatbathError, match="spin programs only"):
        sample_states_batched(jax.random.key(0), program, SamplingSchedule(1, 1, 1), init, [], [Block(cats)],
                              method=method)


def test_tensor_methods_refuse_categorical_programs_and_say_why():
    check_categorical_programs_are_refused("tensor-jnp")
