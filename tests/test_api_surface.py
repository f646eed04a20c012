"""THRML's documented names and their behaviour: block/global state utilities, single-step sampling,
observers, user-written EBMs, and the import paths of the compatibility contract."""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import heatbath
from heatbath import (
    Block,
    BlockGibbsSpec,
    BlockSpec,
    CategoricalNode,
    MomentAccumulatorObserver,
    SamplingSchedule,
    SpinNode,
    StateError,
    block_state_to_global,
    from_global_state,
    get_node_locations,
    make_empty_block_state,
    sample_blocks,
    sample_single_block,
    sample_with_observation,
    verify_block_state,
)
from heatbath.models import AbstractFactorizedEBM, FactorizedEBM, IsingEBM, IsingSamplingProgram, SpinEBMFactor

THRML_NAMES = {
    "heatbath": [
        "AbstractNode", "SpinNode", "CategoricalNode", "Block", "BlockSpec", "block_state_to_global",
        "get_node_locations", "from_global_state", "make_empty_block_state", "verify_block_state",
        "InteractionGroup", "AbstractFactor", "WeightedFactor", "FactorSamplingProgram", "AbstractConditionalSampler",
        "AbstractParametricConditionalSampler", "BernoulliConditional", "SoftmaxConditional", "BlockGibbsSpec",
        "BlockSamplingProgram", "SamplingSchedule", "sample_blocks", "sample_single_block", "sample_with_observation",
        "sample_states", "AbstractObserver", "StateObserver", "MomentAccumulatorObserver",
    ],
    "heatbath.models": [
        "AbstractEBM", "AbstractFactorizedEBM", "FactorizedEBM", "EBMFactor", "DiscreteEBMFactor",
        "DiscreteEBMInteraction", "SquareDiscreteEBMFactor", "SpinEBMFactor", "CategoricalEBMFactor",
        "SquareCategoricalEBMFactor", "SpinGibbsConditional", "CategoricalGibbsConditional", "IsingEBM",
        "IsingSamplingProgram", "IsingTrainingSpec", "hinton_init", "estimate_moments", "estimate_kl_grad",
    ],
    "heatbath.models.discrete_ebm": ["CategoricalEBM", "SpinEBMFactor", "CategoricalGibbsConditional"],
    "heatbath.models.ising": ["IsingEBM", "hinton_init", "estimate_kl_grad", "IsingTrainingSpec"],
    "heatbath.models.ebm": ["AbstractEBM", "FactorizedEBM", "EBMFactor"],
    "heatbath.sampling_programs": [
        "CategoricalSamplingProgram", "IsingSamplingProgram", "FactorSamplingProgram", "BlockSamplingProgram",
    ],
    "heatbath.block_management": ["Block", "BlockSpec", "block_state_to_global", "from_global_state"],
    "heatbath.block_sampling": ["BlockGibbsSpec", "sample_states", "SamplingSchedule", "BlockSamplingProgram"],
    "heatbath.conditional_samplers": ["_SamplerState", "_State", "AbstractConditionalSampler"],
    "heatbath.factor": ["AbstractFactor", "FactorSamplingProgram", "WeightedFactor"],
    "heatbath.interaction": ["InteractionGroup"],
    "heatbath.observers": ["MomentAccumulatorObserver", "StateObserver", "AbstractObserver"],
    "heatbath.pgm": ["AbstractNode", "SpinNode", "CategoricalNode"],
}


@pytest.mark.parametrize("module", sorted(THRML_NAMES))
def test_documented_names_exist(module):
    mod = importlib.import_module(module)
    missing = [name for name in THRML_NAMES[module] if not hasattr(mod, name)]
    assert not missing


def _mixed_spec():
    spins = [SpinNode() for _ in range(3)]
    cats = [CategoricalNode() for _ in range(2)]
    blocks = [Block(spins[:2]), Block(cats), Block(spins[2:])]
    return spins, cats, blocks, BlockSpec(blocks, heatbath.block_management.DEFAULT_NODE_SHAPE_DTYPES)


def test_block_and_global_state_round_trip():
    spins, cats, blocks, spec = _mixed_spec()
    assert len(spec.global_sd_order) == 2 and spec.block_to_global_slice_spec == [[0, 2], [1]]
    state = [jnp.array([True, False]), jnp.array([3, 1], jnp.uint8), jnp.array([True])]
    global_state = block_state_to_global(state, spec)
    assert [g.shape for g in global_state] == [(3,), (2,)]
    sd, pos = get_node_locations(Block([spins[2], spins[0]]), spec)
    assert sd == 0 and list(np.asarray(pos)) == [2, 0]
    back = from_global_state(global_state, spec, [Block([spins[2], spins[0]]), Block(cats[::-1])])
    assert list(np.asarray(back[0])) == [True, True] and list(np.asarray(back[1])) == [1, 3]
    assert spec.node_global_location_map[cats[1]] == (1, 1)


def test_blocks_rebuilt_by_tree_operations_are_the_same_blocks():
    """Tree operations rebuild a program's blocks from their nodes without checking them again (they
    were checked when made): the rebuilt block equals the original and holds the very same nodes."""
    nodes = [SpinNode() for _ in range(5)]
    block = Block(nodes)
    rebuilt = jax.tree.map(lambda x: x, {"block": block, "w": jnp.ones(2)})["block"]
    assert type(rebuilt) is Block and rebuilt == block and rebuilt.nodes is block.nodes
    assert jax.jit(lambda b, x: x + len(b))(block, 1.0) == 6.0


def test_make_empty_and_verify_block_state():
    spins, cats, blocks, spec = _mixed_spec()
    empty = make_empty_block_state(blocks, spec.node_shape_dtypes, batch_shape=(4,))
    assert [e.shape for e in empty] == [(4, 2), (4, 2), (4, 1)]
    assert [e.dtype for e in empty] == [jnp.bool_, jnp.uint8, jnp.bool_]
    verify_block_state(blocks, empty, spec.node_shape_dtypes)
    with pytest.raises(StateError):
        verify_block_state(blocks, empty[:2], spec.node_shape_dtypes)
    with pytest.raises(RuntimeError):  # THRML raises RuntimeError here; StateError is one
        verify_block_state(blocks, [empty[0], empty[1].astype(jnp.int32), empty[2]], spec.node_shape_dtypes)


def _chain_program():
    nodes = [SpinNode() for _ in range(4)]
    edges = [(nodes[i], nodes[i + 1]) for i in range(3)]
    model = IsingEBM(nodes, edges, jnp.array([5.0, 0, 0, 0]), jnp.array([5.0, 5.0, 5.0]), 1.0)
    blocks = [Block(nodes[::2]), Block(nodes[1::2])]
    return nodes, model, blocks, IsingSamplingProgram(model, blocks, [])


def test_sample_single_block_and_sample_blocks():
    nodes, model, blocks, program = _chain_program()
    state = [jnp.zeros(2, bool), jnp.zeros(2, bool)]
    new, sampler_state = sample_single_block(jax.random.key(0), state, [], program, 0, None)
    # node 0 has a huge bias and both even nodes see all-down neighbours: node 0 flips up almost surely
    assert new.shape == (2,) and bool(new[0])
    sweep_state, sampler_states = sample_blocks(jax.random.key(1), state, [], program, [None, None])
    assert [s.shape for s in sweep_state] == [(2,), (2,)] and len(sampler_states) == 2


def test_schedule_counts_and_observer_iterations():
    nodes, model, blocks, program = _chain_program()

    class CountingObserver(heatbath.AbstractObserver):
        def __call__(self, program, state_free, state_clamped, carry, iteration):
            return carry + 1, iteration

    schedule = SamplingSchedule(n_warmup=3, n_samples=4, steps_per_sample=2)
    carry, iterations = sample_with_observation(
        jax.random.key(0), program, schedule, [jnp.zeros(2, bool)] * 2, [], jnp.asarray(0), CountingObserver()
    )
    assert int(carry) == 4 and list(np.asarray(iterations)) == [3, 5, 7, 9]
    assert schedule.n_sweeps == 9


def test_moment_accumulator_with_transform():
    nodes, model, blocks, program = _chain_program()
    observer = MomentAccumulatorObserver(
        [[(n,) for n in nodes], [(nodes[0], nodes[1])]],
        f_transform=lambda states, blocks: [jnp.where(s, 1.0, -1.0) for s in states],
    )
    schedule = SamplingSchedule(20, 50, 1)
    sums, _ = sample_with_observation(
        jax.random.key(2), program, schedule, [jnp.zeros(2, bool)] * 2, [], observer.init(), observer
    )
    # strong ferromagnetic chain with a strong field on node 0: all spins up
    np.testing.assert_allclose(np.asarray(sums[0]) / 50, 1.0)
    np.testing.assert_allclose(np.asarray(sums[1]) / 50, 1.0)


def test_user_written_factorized_ebm_energy():
    a, b, c = SpinNode(), SpinNode(), SpinNode()

    class ChainEBM(AbstractFactorizedEBM):
        weights: jax.Array

        def __init__(self, weights):
            self.weights = weights
            self.node_shape_dtypes = heatbath.block_management.DEFAULT_NODE_SHAPE_DTYPES

        @property
        def factors(self):
            return [SpinEBMFactor([Block([a, b]), Block([b, c])], self.weights)]

    model = ChainEBM(jnp.array([1.0, -2.0]))
    state = [jnp.array([True, False, False])]
    # E = -(w0 s_a s_b + w1 s_b s_c) = -(1*(1)(-1) + (-2)(-1)(-1)) = 3
    assert float(model.energy(state, [Block([a, b, c])])) == pytest.approx(3.0)
    same = FactorizedEBM(model.factors)
    assert float(same.energy([jnp.array([False]), jnp.array([True, False])], [Block([b]), Block([a, c])])) == pytest.approx(3.0)
    grad = jax.grad(lambda m: m.energy(state, [Block([a, b, c])]))(model)
    np.testing.assert_allclose(np.asarray(grad.weights), [1.0, -1.0])


def test_superblock_spec_layout():
    s = [SpinNode() for _ in range(2)]
    c = [CategoricalNode() for _ in range(2)]
    spec = BlockGibbsSpec([(Block([s[0]]), Block([c[0]])), (Block([s[1]]), Block([c[1]]))], [])
    assert spec.sampling_order == [[0, 1], [2, 3]] and len(spec.superblocks) == 2
    assert len(spec.free_blocks) == 4 and spec.clamped_blocks == []
