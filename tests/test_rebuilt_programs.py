"""A program rebuilt from the same nodes equals the first in structure, so it reuses its compiled code.

THRML users build the model, spec and program where they sample: the Benford experiment in the seeds
does so on every training step and calls `sample_states` eagerly. Specs and gather tables compared by
identity, so every rebuilt program compiled everything again (0.3 s a call on a 2-core machine,
against 3 ms for the compiled call). They now compare by content: the blocks' node identities, the
node templates and the tables' entries.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from heatbath import Block, BlockGibbsSpec, CategoricalNode, SamplingSchedule, SpinNode, sample_states
from heatbath.kernels.pairwise_tables import pairwise_tables
from heatbath.kernels.program_structure import split_program
from heatbath.models import IsingEBM, IsingSamplingProgram
from heatbath.models.discrete_ebm import CategoricalEBM
from heatbath.sampling_programs import CategoricalSamplingProgram


def _benford_program(node: CategoricalNode, biases) -> CategoricalSamplingProgram:
    """The seed experiment's `sample_weights` set-up, built anew on each call as it is there."""
    free_blocks = [Block([node])]
    return CategoricalSamplingProgram(CategoricalEBM([node], biases=jnp.asarray(biases)), free_blocks, [])


def _ising_program(nodes, edges, seed: int) -> IsingSamplingProgram:
    rng = np.random.default_rng(seed)
    ebm = IsingEBM(nodes, edges, jnp.asarray(rng.normal(size=len(nodes)), jnp.float32),
                   jnp.asarray(rng.normal(size=len(edges)), jnp.float32), jnp.asarray(1.0))
    return IsingSamplingProgram(ebm, [Block(nodes[0::2]), Block(nodes[1::2])], [])


def test_rebuilt_programs_have_equal_structure_and_other_nodes_do_not():
    node = CategoricalNode(num_states=9)
    first, rebuilt = _benford_program(node, np.zeros(9)), _benford_program(node, np.arange(9.0))
    assert first.gibbs_spec is not rebuilt.gibbs_spec and first.tables is not rebuilt.tables
    assert first.gibbs_spec == rebuilt.gibbs_spec and hash(first.gibbs_spec) == hash(rebuilt.gibbs_spec)
    assert first.tables == rebuilt.tables and hash(first.tables) == hash(rebuilt.tables)
    assert split_program(first)[0] == split_program(rebuilt)[0]
    assert pairwise_tables(rebuilt) is pairwise_tables(first)  # and what is remembered per tables object
    twin = _benford_program(CategoricalNode(num_states=9), np.zeros(9))  # a look-alike node is another variable
    assert first.gibbs_spec != twin.gibbs_spec and split_program(first)[0] != split_program(twin)[0]


def test_specs_differ_in_blocks_grouping_clamping_and_templates():
    a, b, c = SpinNode(), SpinNode(), SpinNode()
    spec = BlockGibbsSpec([Block([a]), Block([b])], [Block([c])])
    assert spec == BlockGibbsSpec([Block([a]), Block([b])], [Block([c])])
    others = [
        BlockGibbsSpec([Block([b]), Block([a])], [Block([c])]),  # sampling order
        BlockGibbsSpec([Block([a, b])], [Block([c])]),  # one block
        BlockGibbsSpec([(Block([a]), Block([b]))], [Block([c])]),  # one superblock
        BlockGibbsSpec([Block([a]), Block([b]), Block([c])], []),  # c free
        BlockGibbsSpec([Block([a]), Block([b])], [Block([c])], {SpinNode: jax.ShapeDtypeStruct((), jnp.int8)}),
    ]
    for other in others:
        assert spec != other, other.sampling_order


def test_tables_of_other_edges_on_the_same_blocks_differ():
    nodes = [SpinNode() for _ in range(6)]
    ring = [(nodes[i], nodes[(i + 1) % 6]) for i in range(6)]
    chords = ring[:4] + [(nodes[0], nodes[3]), (nodes[2], nodes[5])]  # still bipartite between the blocks
    p, q = _ising_program(nodes, ring, 0), _ising_program(nodes, chords, 0)
    assert p.gibbs_spec == q.gibbs_spec and p.tables != q.tables
    assert p.tables == _ising_program(nodes, ring, 1).tables  # other weights, same tables


def test_the_benford_loop_compiles_once_and_samples_each_steps_biases(monkeypatch):
    """The seed's loop: program rebuilt each step, eager `sample_states`. One trace in all; each
    step's samples are those the THRML-style call gives for that step's program."""
    from heatbath.kernels import dispatch

    traces = []
    run_pairwise = dispatch.run_pairwise
    monkeypatch.setattr(dispatch, "run_pairwise", lambda *a, **k: traces.append(1) or run_pairwise(*a, **k))
    dispatch._one_chain_call.cache_clear()
    node = CategoricalNode(num_states=9)
    schedule = SamplingSchedule(n_warmup=0, n_samples=2000, steps_per_sample=1)
    init = [jnp.zeros((1,), jnp.uint8)]
    eager_traces = []
    for step, favourite in enumerate((2, 7, 4)):
        program = _benford_program(node, np.where(np.arange(9) == favourite, 5.0, 0.0))
        key = jax.random.key(step)
        before = len(traces)
        digits = np.asarray(sample_states(key, program, schedule, init, [], [Block([node])])[0])[:, 0]
        eager_traces.append(len(traces) - before)
        assert np.mean(digits == favourite) > 0.9  # e^5 / (e^5 + 8) = 0.949
        thrml_style = jax.jit(jax.vmap(lambda k: sample_states(k, program, schedule, init, [], [Block([node])])))
        np.testing.assert_array_equal(np.asarray(thrml_style(key[None])[0])[0, :, 0], digits)
    assert eager_traces == [1, 0, 0]


def test_a_jitted_function_of_the_program_is_not_retraced_for_a_rebuilt_program():
    nodes = [SpinNode() for _ in range(6)]
    edges = [(nodes[i], nodes[(i + 1) % 6]) for i in range(6)]
    traces = []

    @eqx.filter_jit
    def energy_sum(program):
        traces.append(1)
        return sum(jnp.sum(x) for x in jax.tree.leaves(eqx.filter(program, eqx.is_array)))

    values = [float(energy_sum(_ising_program(nodes, edges, seed))) for seed in range(3)]
    assert len(traces) == 1 and len(set(values)) == 3
