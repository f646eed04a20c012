"""Whole sweeps with the state resident in a cluster's shared memory (`kernels.table_resident`): the
layout reads every neighbour through its owner, the jax.numpy twin of the kernel takes the per-update
table kernel's steps bit for bit, and on a GPU of compute capability 9.0 the native kernel does too
(with clamped nodes, several groups, launches split by the seed limit) and samples the exact
distribution."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from heatbath import SamplingSchedule
from heatbath.kernels import pairwise_sweep, table_resident, table_spin
from heatbath.kernels.pairwise_tables import pairwise_tables
from test_table_spin import NATIVE, _dense_spin_glass, _table_final_states
from test_exact_agreement import _check as check_against_exact
from test_tensor_spin import _run, _spin_glass

RESIDENT = NATIVE and table_resident.resident_runs_here()


def _layout(program):
    tables = pairwise_tables(program)
    order = tuple(tuple(members) for members in program.gibbs_spec.sampling_order)
    return tables, table_resident.resident_layout(table_spin.table_layouts(tables), tables.block_sizes, order)


@pytest.mark.parametrize("spread", ["local", "turns"])
def test_layout_reads_every_neighbour_through_its_owner(spread):
    spins, ebm, program = _spin_glass(300, 21)
    tables = pairwise_tables(program)
    layouts = table_spin.table_layouts(tables)
    order = tuple(tuple(members) for members in program.gibbs_spec.sampling_order)
    layout = table_resident.resident_layout(layouts, tables.block_sizes, order, spread)
    offsets = np.cumsum([0] + list(tables.block_sizes))
    concat = np.cumsum([0] + list(tables.block_sizes[: len(layouts)]))
    scratch = offsets[-1]
    owner, local = layout.slots >> 16, layout.slots & 0xFFFF
    reads = layout.home_rows[owner, local]  # the flat row each slot reads
    held = layout.home_rows[layout.home_rows >= 0]
    assert sorted(held.tolist()) == list(range(scratch + 1))  # every row held once, the scratch row too
    for b, nodes, first, barrier, _ in layout.plan:
        assert nodes % 4 == 0 and first % 4 == 0 and barrier == 1  # one block per colour
        picks = layout.picks[:, first : first + nodes]
        assert sorted(picks[picks >= 0].tolist()) == list(range(concat[b], concat[b + 1]))  # each node once
        for k, t in zip(*np.nonzero(picks >= 0)):
            j = picks[k, t] - concat[b]  # node j of the block's kernel order
            assert layout.home_rows[k, first + t] == offsets[b] + layouts[b].order[j]  # written where it is held
            want = layouts[b].neighbours[j]
            np.testing.assert_array_equal(reads[k, first + t, : len(want)], want)
            assert (reads[k, first + t, len(want):] == scratch).all()
    padding = layout.picks < 0
    assert (layout.home_rows[:, : layout.nodes][padding] == -1).all()
    assert (reads[padding] == scratch).all()


def test_local_spread_keeps_most_reads_in_the_block():
    """On a lattice, runs of the Cuthill-McKee order give each cluster block mostly its own rows."""
    from heatbath.graphs import color_blocks
    from heatbath.models import IsingEBM, IsingSamplingProgram
    from heatbath import SpinNode

    side = 24
    nodes = [SpinNode() for _ in range(side * side)]
    edges = [(nodes[i * side + j], nodes[i * side + (j + 1) % side]) for i in range(side) for j in range(side)]
    edges += [(nodes[i * side + j], nodes[((i + 1) % side) * side + j]) for i in range(side) for j in range(side)]
    ebm = IsingEBM(nodes, edges, jnp.zeros(len(nodes)), jnp.full(len(edges), 0.3), jnp.asarray(1.0))
    program = IsingSamplingProgram(ebm, color_blocks(ebm), [])
    tables = pairwise_tables(program)
    order = tuple(tuple(members) for members in program.gibbs_spec.sampling_order)
    remote = {}
    for spread in ("local", "turns"):
        layout = table_resident.resident_layout(table_spin.table_layouts(tables), tables.block_sizes, order, spread)
        used = layout.home_rows[layout.slots >> 16, layout.slots & 0xFFFF] != sum(tables.block_sizes)
        remote[spread] = ((layout.slots >> 16) != np.arange(table_resident.CLUSTER)[:, None, None])[used].mean()
    assert remote["local"] < 0.6 * remote["turns"]  # 0.41 against 0.73 here


def test_a_block_missing_from_the_sampling_order_has_no_layout():
    spins, ebm, program = _spin_glass(60, 22)
    tables = pairwise_tables(program)
    layouts = table_spin.table_layouts(tables)
    assert table_resident.resident_layout(layouts, tables.block_sizes, ((0,),)) is None
    assert table_resident.resident_layout(layouts, tables.block_sizes, ((0, 1), (1,))) is None


def test_twin_takes_the_per_update_kernels_steps_bit_for_bit(monkeypatch):
    """The jax.numpy twin of the resident kernel reads the state, tables, hashes and seeds through the
    cluster layout: its samples equal the per-update table twin's exactly, also when a run is split
    into several launches by the seed limit."""
    spins, ebm, program = _spin_glass(400, 23)
    schedule = SamplingSchedule(5, 3, 2)
    reference = _run(program, schedule, 48, [spins], "table-jnp")
    np.testing.assert_array_equal(_run(program, schedule, 48, [spins], "table-resident-jnp")[0], reference[0])
    monkeypatch.setattr(table_resident, "SEED_WORDS_PER_CALL", 2 * 48 * 2)  # two sweeps a launch
    np.testing.assert_array_equal(_run(program, schedule, 48, [spins], "table-resident-jnp")[0], reference[0])


def test_twin_with_clamped_nodes_and_two_tables_per_node():
    """Clamped rows live in the cluster too (read, never written); nodes of up to ten neighbours."""
    from heatbath import Block
    from heatbath.graphs import color_blocks
    from test_exact_agreement import _program
    from test_pairwise_kernels import pairwise_spin_model

    spins, _, ebm = pairwise_spin_model(np.random.default_rng(24), 40)
    clamped = spins[::5]
    free = color_blocks(ebm, nodes=[n for n in spins if n not in set(clamped)])
    program = _program(ebm, free, [Block(clamped)], 2)
    assert max(layout.groups for layout in table_spin.table_layouts(pairwise_tables(program))) >= 2
    values = [jnp.asarray(np.random.default_rng(25).random(len(clamped)) < 0.5)]
    schedule = SamplingSchedule(3, 3, 1)
    reference = _run(program, schedule, 32, [spins], "table-jnp", clamp=values)
    np.testing.assert_array_equal(_run(program, schedule, 32, [spins], "table-resident-jnp", clamp=values)[0],
                                  reference[0])


def test_chain_slices_fit_shared_memory_or_are_refused():
    spins, ebm, program = _spin_glass(300, 26)
    tables, layout = _layout(program)
    config = table_resident.resident_config(layout, 64)
    assert config is not None and config.chains == 32 and config.shared_bytes <= table_resident.SHARED_BYTES_LIMIT
    assert table_resident.resident_config(layout, 48).chains == 16  # 32 does not divide 48
    assert config.threads % 32 == 0 and config.threads <= 1024


@pytest.mark.skipif(not RESIDENT, reason="the resident kernel runs on CUDA GPUs of compute capability 9.0 on")
def test_native_kernel_takes_the_per_update_kernels_steps_bit_for_bit(monkeypatch):
    spins, ebm, program = _spin_glass(2000, 27)
    schedule = SamplingSchedule(4, 3, 2)
    for chains in (48, 256):
        monkeypatch.setattr(pairwise_sweep, "RESIDENT_MAX_CHAINS", 0)
        per_update = _run(program, schedule, chains, [spins], "table")
        monkeypatch.setattr(pairwise_sweep, "RESIDENT_MAX_CHAINS", 1 << 20)
        resident = _run(program, schedule, chains, [spins], "table")
        np.testing.assert_array_equal(resident[0], per_update[0])
        assert 0.2 < resident[0].mean() < 0.8


@pytest.mark.skipif(not RESIDENT, reason="the resident kernel runs on CUDA GPUs of compute capability 9.0 on")
def test_native_kernel_matches_its_twin_across_launches(monkeypatch):
    spins, ebm, program = _spin_glass(300, 28)
    schedule = SamplingSchedule(7, 2, 3)
    twin = _run(program, schedule, 64, [spins], "table-resident-jnp")
    monkeypatch.setattr(table_resident, "SEED_WORDS_PER_CALL", 3 * 64 * 2)  # three sweeps a launch
    native = _run(program, schedule, 64, [spins], "table")
    assert np.mean(native[0] == twin[0]) > 0.9999  # the hardware's exp2 differs at near-ties only


@pytest.mark.skipif(not RESIDENT, reason="the resident kernel runs on CUDA GPUs of compute capability 9.0 on")
def test_resident_kernel_matches_enumeration_with_clamped_nodes():
    spins, cats, ebm = _dense_spin_glass(29)
    check_against_exact(ebm, spins, cats, 2, clamp_nodes=spins[::4], seed=29, sample=_table_final_states)
