"""The batched fast path samples the exact distribution on the same random models as the generic path."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from heatbath import HeatbathError, SamplingSchedule
from heatbath.graphs import color_blocks
from heatbath.kernels.batched import sample_states_batched, supports_batched
from stats_helpers import random_init
from test_exact_agreement import N_WARMUP, _program, categorical_model, mixed_model, spin_model
from test_exact_agreement import _check as check_against_exact


def _batched_final_states(program, init, blocks, clamp_values, seed):
    assert supports_batched(program) is None
    schedule = SamplingSchedule(N_WARMUP, 1, 1)
    out = sample_states_batched(jax.random.key(seed), program, schedule, init, clamp_values, blocks)
    return [np.asarray(x[:, 0]) for x in out]


def _check(ebm, spins, cats, k, **options):
    check_against_exact(ebm, spins, cats, k, sample=_batched_final_states, **options)


def test_spin_factors_up_to_order_3():
    spins, cats, ebm = spin_model(np.random.default_rng(12), 12)
    _check(ebm, spins, cats, 2, seed=12)


def test_categorical_factors_up_to_order_3_clamped():
    spins, cats, ebm = categorical_model(np.random.default_rng(19), 7, 3)
    _check(ebm, spins, cats, 3, clamp_nodes=cats[:2], seed=19)


def test_mixed_factors_with_superblocks_and_clamping():
    spins, cats, ebm = mixed_model(np.random.default_rng(23), 6, 4, 3)
    _check(ebm, spins, cats, 3, clamp_nodes=[spins[0], cats[1]], superblocks=True, seed=23)


def test_results_do_not_depend_on_how_chains_are_batched():
    spins, cats, ebm = spin_model(np.random.default_rng(3), 8)
    blocks = color_blocks(ebm)
    program = _program(ebm, blocks, [], 2)
    init = random_init(jax.random.key(0), blocks, 6, [2] * len(blocks), [jnp.bool_] * len(blocks))
    schedule = SamplingSchedule(5, 3, 2)
    whole = sample_states_batched(jax.random.key(9), program, schedule, init, [], blocks)
    # The same first 4 chains alone: counter-based random words are indexed by chain, not by batch size.
    part = sample_states_batched(jax.random.key(9), program, schedule, [x[:4] for x in init], [], blocks)
    assert whole[0].shape == (6, 3, len(blocks[0]))
    for w, p in zip(whole, part):
        np.testing.assert_array_equal(np.asarray(w[:4]), np.asarray(p))
    # and the chains do differ from one another (the words are not shared between chains)
    assert any(not np.array_equal(np.asarray(w[0]), np.asarray(w[1])) for w in whole)


def test_rejects_programs_it_cannot_run():
    from heatbath.models import SpinGibbsConditional

    class Custom(SpinGibbsConditional):
        pass

    spins, cats, ebm = spin_model(np.random.default_rng(1), 4)
    blocks = color_blocks(ebm)
    from heatbath import BlockGibbsSpec, FactorSamplingProgram

    program = FactorSamplingProgram(BlockGibbsSpec(blocks, []), [Custom()] * len(blocks), ebm.factors, [])
    init = [jnp.zeros((2, len(b)), bool) for b in blocks]
    with pytest.raises(HeatbathError, match="uses Custom.*Use sample_states"):
        sample_states_batched(jax.random.key(0), program, SamplingSchedule(1, 1, 1), init, [], blocks)


def test_sampled_nodes_are_looked_up_once_even_in_new_blocks(monkeypatch):
    """A loop that builds its sampled blocks anew on every call (`[Block(nodes)]` inline) looks the
    nodes up once: the ids are remembered per (spec, node tuple), not only per block object."""
    from heatbath import Block
    from heatbath.block_sampling import BlockGibbsSpec

    from heatbath.graphs import lattice_2d
    from heatbath.models import IsingEBM, IsingSamplingProgram

    lattice = lattice_2d(4, periodic=True)  # a pairwise program: the pairwise kernels' entry
    ebm = IsingEBM(lattice.nodes, lattice.edges, jnp.zeros(16), jnp.full(len(lattice.edges), 0.3), jnp.asarray(1.0))
    colours = lattice.colors()
    blocks = [Block([lattice.nodes[i] for i in np.flatnonzero(colours == c)]) for c in (0, 1)]
    program = IsingSamplingProgram(ebm, blocks, [])
    init = [jnp.zeros((4, 8), jnp.bool_) for _ in blocks]
    lookups = []
    node_ids = BlockGibbsSpec.node_ids
    monkeypatch.setattr(BlockGibbsSpec, "node_ids",
                        lambda self, nodes, *a: lookups.append(a[0] if a else "") or node_ids(self, nodes, *a))
    nodes = [n for block in blocks for n in block.nodes]
    runs = [sample_states_batched(jax.random.key(1), program, SamplingSchedule(2, 2, 1), init, [], [Block(nodes)])
            for _ in range(3)]
    assert lookups.count("sampled node") == 1
    for run in runs[1:]:
        np.testing.assert_array_equal(np.asarray(run[0]), np.asarray(runs[0][0]))
    reordered = nodes[::-1]  # other nodes (or another order): looked up anew
    out = sample_states_batched(jax.random.key(1), program, SamplingSchedule(2, 2, 1), init, [], [Block(reordered)])
    assert lookups.count("sampled node") == 2
    np.testing.assert_array_equal(np.asarray(out[0]), np.asarray(runs[0][0])[..., ::-1])


def test_a_program_with_new_weights_reuses_the_compiled_call_and_samples_its_own_weights(monkeypatch):
    """The compiled call is found by the program's structure: a program whose weights were replaced
    (as a training step does) traces nothing new, and its samples are those of its own weights,
    exactly what a fresh compilation gives (no weight is baked in as a constant)."""
    from heatbath import Block
    from heatbath.graphs import lattice_2d
    from heatbath.kernels import batched
    from heatbath.models import IsingEBM, IsingSamplingProgram

    lattice = lattice_2d(4, periodic=True)
    ebm = IsingEBM(lattice.nodes, lattice.edges, jnp.full(16, 0.2), jnp.full(len(lattice.edges), 0.8), jnp.asarray(1.0))
    colours = lattice.colors()
    blocks = [Block([lattice.nodes[i] for i in np.flatnonzero(colours == c)]) for c in (0, 1)]
    program = IsingSamplingProgram(ebm, blocks, [])
    flipped = jax.tree.map(lambda x: -x if isinstance(x, jax.Array) and x.dtype == jnp.float32 else x, program)
    init = [jnp.zeros((8, 8), jnp.bool_) for _ in blocks]
    schedule = SamplingSchedule(3, 2, 1)
    traces = []
    run_pairwise = batched.run_pairwise
    monkeypatch.setattr(batched, "run_pairwise", lambda *a, **k: traces.append(1) or run_pairwise(*a, **k))
    call = lambda p: np.asarray(sample_states_batched(jax.random.key(4), p, schedule, init, [], blocks)[0])  # noqa: E731
    first, second = call(program), call(flipped)
    assert len(traces) == 1
    assert not np.array_equal(first, second)
    batched._pairwise_call.cache_clear()
    jax.clear_caches()
    np.testing.assert_array_equal(call(flipped), second)  # compiled afresh, for the flipped weights
    np.testing.assert_array_equal(call(program), first)  # which serve the first program's weights too
    assert len(traces) == 2


@pytest.mark.parametrize("model", ["spin", "categorical", "mixed"])
def test_programs_built_from_concrete_weights_hold_only_jax_arrays(model):
    """Every array of a program is a jax Array: the batched call passes a program's arrays to its
    compiled call, and a numpy leaf would be copied to the device on every call (the merged weights
    of multi-group spin factors were numpy: 3 MB a call for a 784 x 500 RBM)."""
    from heatbath import Block

    rng = np.random.default_rng(5)
    spins, cats, ebm = {"spin": lambda: spin_model(rng, 8), "categorical": lambda: categorical_model(rng, 6, 3),
                        "mixed": lambda: mixed_model(rng, 4, 4, 3)}[model]()
    free = [Block([node]) for node in spins + cats]  # one node a block: no two interacting nodes share one
    program = _program(ebm, free, [], 3)
    numpy_leaves = [jax.tree_util.keystr(path) for path, leaf in jax.tree_util.tree_flatten_with_path(program)[0]
                    if isinstance(leaf, np.ndarray)]
    assert not numpy_leaves, numpy_leaves


def test_concrete_weights_are_laid_out_once_per_program_with_the_same_samples(monkeypatch):
    """`sample_states_batched` lays out a program's concrete weights for the sweeps once
    (`batched._laid_out_weights`, remembered per program), not on every call; the samples are those
    of laying them out inside the call, which numpy weights (mutable) still do."""
    from heatbath import Block, BlockGibbsSpec, CategoricalNode, FactorSamplingProgram
    from heatbath.kernels import batched
    from heatbath.models import CategoricalEBMFactor, CategoricalGibbsConditional

    rng = np.random.default_rng(8)
    visible = [CategoricalNode(f"v{i}", num_states=3) for i in range(4)]
    hidden = [CategoricalNode(f"h{j}", num_states=3) for j in range(40)]  # read as a dense layer
    every = [Block([v for v in visible for _ in hidden]), Block([h for _ in visible for h in hidden])]

    def program_of(weights):
        factors = [CategoricalEBMFactor([Block(visible)], jnp.asarray(rng.normal(0, 1, (4, 3)), jnp.float32)),
                   CategoricalEBMFactor(every, weights)]
        spec = BlockGibbsSpec([Block(visible), Block(hidden)], [])
        return FactorSamplingProgram(spec, [CategoricalGibbsConditional(3)] * 2, factors, [])

    weights = rng.normal(0, 0.5, (160, 3, 3)).astype(np.float32)
    program = program_of(jnp.asarray(weights))
    blocks = [Block(visible), Block(hidden)]
    init = [jnp.zeros((6, 4), jnp.uint8), jnp.zeros((6, 40), jnp.uint8)]
    call = lambda p: [np.asarray(x) for x in sample_states_batched(jax.random.key(3), p, SamplingSchedule(3, 4, 1),  # noqa: E731
                                                                  init, [], blocks)]
    lay_out, made = batched._lay_out, []
    monkeypatch.setattr(batched, "_lay_out", lambda structure: lambda arrays: made.append(1) or lay_out(structure)(arrays))
    first, again = call(program), call(program)
    assert len(made) == 1  # once for this program
    with monkeypatch.context() as inside:
        inside.setattr(batched, "_laid_out_weights", lambda *args: None)  # laid out inside the call instead
        in_call = call(program)
    for a, b, c in zip(first, again, in_call):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    mutable = program_of(jnp.asarray(weights))
    mutable = jax.tree.map(lambda x: np.asarray(x) if isinstance(x, jax.Array) and x.ndim == 3 else x, mutable)
    assert batched._laid_out_weights(mutable, *batched.split_program(mutable)) is None
