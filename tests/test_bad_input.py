"""Every kind of bad input gets a clear error that names the problem (and usually the fix)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from heatbath import (
    AbstractNode,
    Block,
    BlockGibbsSpec,
    CategoricalNode,
    FactorSamplingProgram,
    HeatbathError,
    IndependenceError,
    SamplingSchedule,
    SpinNode,
    StateError,
    sample_states,
)
from heatbath.models import (
    CategoricalEBM,
    CategoricalGibbsConditional,
    CategoricalSamplingProgram,
    IsingEBM,
    IsingSamplingProgram,
    SpinEBMFactor,
    SpinGibbsConditional,
)
from heatbath.kernels import sample_states_batched


@pytest.fixture
def chain():
    nodes = [SpinNode(f"s{i}") for i in range(4)]
    edges = [(nodes[i], nodes[i + 1]) for i in range(3)]
    model = IsingEBM(nodes, edges, jnp.zeros(4), jnp.ones(3), 1.0)
    blocks = [Block(nodes[::2]), Block(nodes[1::2])]
    return nodes, model, blocks, IsingSamplingProgram(model, blocks, [])


def _run(program, init, clamp=(), blocks=None):
    blocks = blocks or program.gibbs_spec.free_blocks
    return sample_states(jax.random.key(0), program, SamplingSchedule(1, 2, 1), init, list(clamp), blocks)


def test_init_state_of_wrong_shape(chain):
    _, _, blocks, program = chain
    with pytest.raises(StateError, match=r"has shape \(3,\).*2 nodes"):
        _run(program, [jnp.zeros(3, bool), jnp.zeros(2, bool)])


def test_batched_init_state_without_vmap_says_to_vmap(chain):
    _, _, blocks, program = chain
    with pytest.raises(StateError, match="jax.vmap"):
        _run(program, [jnp.zeros((5, 2), bool), jnp.zeros((5, 2), bool)])


def test_init_state_of_wrong_dtype(chain):
    _, _, blocks, program = chain
    with pytest.raises(StateError, match=r"dtype float32.*stored as bool.*astype"):
        _run(program, [jnp.zeros(2), jnp.zeros(2, bool)])


def test_init_state_as_one_array_is_read_as_its_rows_as_thrml_does(chain):
    """THRML iterates the free-state argument, so a single array's rows are the blocks' states (the
    Benford experiment passes `jnp.zeros((1, 1), jnp.uint8)` for one block of one node); an array with
    another number of rows than blocks is refused, naming both counts and the fix."""
    _, _, blocks, program = chain
    rows = jnp.asarray([[True, False], [False, True]])
    as_array = _run(program, rows)
    as_list = _run(program, [rows[0], rows[1]])
    for a, b in zip(as_array, as_list):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(StateError, match=r"single array of shape \(3, 2\).*2 blocks.*list with one array"):
        _run(program, jnp.zeros((3, 2), bool))
    with pytest.raises(StateError, match=r"single array of shape \(\)"):
        _run(program, jnp.zeros((), bool))

    node = CategoricalNode()
    model = CategoricalEBM([node], jnp.log(jnp.arange(1.0, 10.0))[None, :])
    one = CategoricalSamplingProgram(model, [Block([node])], [])
    seed_style = sample_states(jax.random.key(1), one, SamplingSchedule(2, 50, 1), jnp.zeros((1, 1), jnp.uint8), [],
                               [Block([node])])
    listed = sample_states(jax.random.key(1), one, SamplingSchedule(2, 50, 1), [jnp.zeros(1, jnp.uint8)], [],
                           [Block([node])])
    np.testing.assert_array_equal(seed_style[0], listed[0])


def test_wrong_number_of_samplers(chain):
    _, model, blocks, _ = chain
    spec = BlockGibbsSpec(blocks, [])
    with pytest.raises(HeatbathError, match="1 samplers for 2 free blocks"):
        FactorSamplingProgram(spec, [SpinGibbsConditional()], model.factors, [])


def test_free_block_with_interacting_nodes_names_both(chain):
    nodes, model, _, _ = chain
    with pytest.raises(IndependenceError, match=r"SpinNode\('s0'\).*SpinNode\('s1'\).*same free block"):
        IsingSamplingProgram(model, [Block([nodes[0], nodes[1], nodes[3]]), Block([nodes[2]])], [])


def test_superblock_with_interacting_nodes(chain):
    nodes, model, _, _ = chain
    with pytest.raises(IndependenceError, match="same superblock"):
        IsingSamplingProgram(model, [(Block([nodes[0], nodes[2]]), Block([nodes[1]])), Block([nodes[3]])], [])


def test_order_three_factor_in_one_block_is_rejected():
    a, b, c = SpinNode("a"), SpinNode("b"), SpinNode("c")
    factor = SpinEBMFactor([Block([a]), Block([b]), Block([c])], jnp.ones(1))
    spec = BlockGibbsSpec([Block([a, c]), Block([b])], [])
    with pytest.raises(IndependenceError, match=r"Nodes SpinNode\('[ac]'\).*and SpinNode\('[ac]'\).*same free block"):
        FactorSamplingProgram(spec, [SpinGibbsConditional()] * 2, [factor], [])


def test_node_type_without_shape_dtype():
    class ContinuousNode(AbstractNode):
        pass

    with pytest.raises(HeatbathError, match=r"ContinuousNode has no shape/dtype.*node_shape_dtypes"):
        BlockGibbsSpec([Block([ContinuousNode()])], [])


@pytest.mark.parametrize(
    "biases, weights, match",
    [
        (jnp.zeros(3), jnp.ones(3), r"biases have shape \(3,\); expected \(4,\)"),
        (jnp.zeros(4), jnp.ones((3, 2)), r"weights have shape \(3, 2\); expected \(3,\)"),
    ],
)
def test_ising_weights_of_wrong_shape(chain, biases, weights, match):
    nodes, model, _, _ = chain
    with pytest.raises(HeatbathError, match=match):
        IsingEBM(nodes, model.edges, biases, weights, 1.0)


def test_factor_weights_of_wrong_shape():
    a, b = SpinNode(), SpinNode()
    with pytest.raises(HeatbathError, match="leading dimension"):
        SpinEBMFactor([Block([a, b])], jnp.ones(3))
    with pytest.raises(HeatbathError, match="must have 2 dimensions"):
        from heatbath.models import CategoricalEBMFactor

        CategoricalEBMFactor([Block([CategoricalNode()])], jnp.ones((1, 3, 3)))


def test_categorical_weights_of_wrong_shape():
    a, b = CategoricalNode(), CategoricalNode()
    with pytest.raises(HeatbathError, match=r"weights have shape \(2, 3, 3\); expected \[n_edges, K, K\] = \(1, 3, 3\)"):
        CategoricalEBM([a, b], biases=jnp.zeros((2, 3)), edges=[(a, b)], weights=jnp.zeros((2, 3, 3)))
    with pytest.raises(HeatbathError, match=r"inconsistent numbers of categories \[3, 4\]"):
        CategoricalEBM([a, b], biases=jnp.zeros((2, 3)), edges=[(a, b)], weights=jnp.zeros((1, 3, 4)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_weights(chain, bad):
    nodes, model, _, _ = chain
    weights = jnp.array([1.0, bad, 1.0])
    with pytest.raises(HeatbathError, match="NaN or infinite"):
        IsingEBM(nodes, model.edges, jnp.zeros(4), weights, 1.0)
    with pytest.raises(HeatbathError, match="NaN or infinite"):
        SpinEBMFactor([Block(nodes[:3])], weights)


def test_categorical_state_out_of_range():
    nodes = [CategoricalNode() for _ in range(2)]
    model = CategoricalEBM(nodes, biases=jnp.zeros((2, 3)), edges=[(nodes[0], nodes[1])], weights=jnp.zeros((1, 3, 3)))
    blocks = [Block([nodes[0]]), Block([nodes[1]])]
    program = CategoricalSamplingProgram(model, blocks, [])
    with pytest.raises(StateError, match=r"categorical state is outside \[0, K\)"):
        jax.block_until_ready(_run(program, [jnp.array([1], jnp.uint8), jnp.array([3], jnp.uint8)]))


def test_categorical_state_out_of_range_in_a_compiled_call_on_several_devices():
    """Inside `jit(vmap(...))` the state is traced, so the check runs in the compiled call, whose
    chains are split over the devices (4 host devices on the CPU): every device must raise together
    (one raising alone left the others waiting in a collective; XLA aborted the process after 40 s)."""
    if len(jax.devices()) < 2:
        pytest.skip("needs several devices (CPU test runs force 4)")
    nodes = [CategoricalNode() for _ in range(2)]
    model = CategoricalEBM(nodes, biases=jnp.zeros((2, 3)), edges=[(nodes[0], nodes[1])], weights=jnp.zeros((1, 3, 3)))
    blocks = [Block([nodes[0]]), Block([nodes[1]])]
    program = CategoricalSamplingProgram(model, blocks, [])
    init = [jnp.ones((8, 1), jnp.uint8), jnp.ones((8, 1), jnp.uint8).at[5].set(3)]  # one chain, on one device
    run = jax.jit(jax.vmap(lambda k, a, b: sample_states(k, program, SamplingSchedule(1, 2, 1), [a, b], [], blocks)))
    with pytest.raises(Exception, match=r"categorical state is outside \[0, K\)"):
        jax.block_until_ready(run(jax.random.split(jax.random.key(0), 8), *init))


def test_categorical_state_out_of_range_in_a_batched_call_on_the_host():
    """`sample_states_batched` with states on the host (CPU arrays, numpy) raises StateError before
    compiling, not a runtime error out of the compiled call."""
    nodes = [CategoricalNode() for _ in range(2)]
    model = CategoricalEBM(nodes, biases=jnp.zeros((2, 3)), edges=[(nodes[0], nodes[1])], weights=jnp.zeros((1, 3, 3)))
    blocks = [Block([nodes[0]]), Block([nodes[1]])]
    program = CategoricalSamplingProgram(model, blocks, [])
    good = np.ones((8, 1), np.uint8)
    on_cpu = jax.device_put(jnp.asarray(good).at[5].set(3), jax.devices("cpu")[0])  # also where a GPU is the default
    for bad in (on_cpu, good.copy() + np.eye(8, 1, -5, dtype=np.uint8) * 2):
        with pytest.raises(StateError, match=r"categorical state is outside \[0, K\)"):
            sample_states_batched(jax.random.key(0), program, SamplingSchedule(1, 2, 1), [good, bad], [], blocks)
    sample_states_batched(jax.random.key(0), program, SamplingSchedule(1, 2, 1), [good, good], [], blocks)


def test_clamped_categorical_state_out_of_range():
    nodes = [CategoricalNode() for _ in range(2)]
    model = CategoricalEBM(nodes, biases=jnp.zeros((2, 4)), edges=[(nodes[0], nodes[1])], weights=jnp.zeros((1, 4, 4)))
    program = CategoricalSamplingProgram(model, [Block([nodes[0]])], [Block([nodes[1]])])
    with pytest.raises(StateError, match=r"categorical state is outside \[0, K\)"):
        jax.block_until_ready(_run(program, [jnp.array([0], jnp.uint8)], [jnp.array([7], jnp.uint8)]))


def test_categorical_node_num_states_disagreeing_with_weights():
    a, b = CategoricalNode(num_states=3), CategoricalNode(num_states=3)
    with pytest.raises(HeatbathError, match="inconsistent numbers of categories"):
        CategoricalEBM([a, b], biases=jnp.zeros((2, 4)))


@pytest.mark.parametrize("n_samples", [0, -1])
def test_zero_samples(n_samples):
    with pytest.raises(HeatbathError, match=r"n_samples must be an integer >= 1.*at least one sample"):
        SamplingSchedule(n_warmup=1, n_samples=n_samples, steps_per_sample=1)


def test_empty_blocks(chain):
    nodes, model, blocks, _ = chain
    with pytest.raises(HeatbathError, match="is empty"):
        IsingSamplingProgram(model, blocks + [Block([])], [])
    with pytest.raises(HeatbathError, match="is empty"):
        IsingSamplingProgram(model, blocks, [Block([])])


def test_node_both_free_and_clamped(chain):
    nodes, model, blocks, _ = chain
    with pytest.raises(HeatbathError, match=r"SpinNode\('s0'\) appears in free block 0 and again in clamped block 0"):
        IsingSamplingProgram(model, blocks, [Block([nodes[0]])])


def test_block_mixing_node_types():
    with pytest.raises(HeatbathError, match="single type.*superblock"):
        Block([SpinNode(), CategoricalNode()])


def test_sampler_with_wrong_category_count():
    nodes = [CategoricalNode() for _ in range(2)]
    model = CategoricalEBM(nodes, biases=jnp.zeros((2, 3)))
    spec = BlockGibbsSpec([Block(nodes)], [])
    program = FactorSamplingProgram(spec, [CategoricalGibbsConditional(4)], model.factors, [])
    with pytest.raises(HeatbathError, match=r"3 categories.*CategoricalGibbsConditional\(4\)"):
        _run(program, [jnp.zeros(2, jnp.uint8)])


def test_tail_node_missing_from_program(chain):
    nodes, model, _, _ = chain
    with pytest.raises(HeatbathError, match="in neither a free nor a clamped block"):
        IsingSamplingProgram(model, [Block([nodes[0]])], [])


def test_sampler_returning_the_wrong_kind_of_dtype(chain):
    from heatbath.models import SpinGibbsConditional

    class FloatSpins(SpinGibbsConditional):
        def sample_given_parameters(self, key, parameters, sampler_state, output_sd):
            return jax.random.uniform(key, output_sd.shape), sampler_state

    nodes, model, blocks, _ = chain
    spec = BlockGibbsSpec(blocks, [])
    program = FactorSamplingProgram(spec, [FloatSpins(), FloatSpins()], model.factors, [])
    with pytest.raises(HeatbathError, match=r"returned dtype float32, but the block is stored as bool"):
        _run(program, [jnp.zeros(2, bool), jnp.zeros(2, bool)])
