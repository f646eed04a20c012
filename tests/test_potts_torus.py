"""The uniform Potts torus inside a THRML-style categorical program: recognised, and sampled by the
Potts lattice kernel.

On CUDA GPUs `sample_states` (alone or under `jax.vmap`) and `sample_states_batched` run a program
that is the q-state Potts model on an L × L torus through the Potts lattice kernel. Here (CPU) the
route is forced onto the kernel's jax.numpy twin (and its interpreted Pallas kernel), which gives
identical states. Error bars: each chain's time average is one sample and chains are independent, so
the standard error over chains is honest whatever the autocorrelation within a chain.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from heatbath.block_management import Block
from heatbath.block_sampling import BlockGibbsSpec, SamplingSchedule, sample_states
from heatbath.exact import potts_energy_per_site_exact
from heatbath.factor import FactorSamplingProgram
from heatbath.graphs import lattice_2d
from heatbath.kernels import batched, dispatch
from heatbath.kernels.pairwise_tables import pairwise_tables
from heatbath.kernels.pallas_backend import pallas_available
from heatbath.kernels.potts_torus import potts_torus, torus_model
from heatbath.models.discrete_ebm import CategoricalEBMFactor, CategoricalGibbsConditional
from heatbath.pgm import CategoricalNode

Z_LIMIT = 4.0


def _program(L: int, q: int, J: float, field=None, *, swap_blocks=False, noise=0.0, bias_noise=0.0):
    """A THRML-style Potts program on heatbath's periodic L × L lattice (row-major nodes): one factor of
    J·I coupling matrices, an optional bias factor (`field` on every node), the checkerboard blocks."""
    lattice = lattice_2d(L, periodic=True, node_type=CategoricalNode)
    nodes, edges = lattice.nodes, lattice.edge_index
    rng = np.random.default_rng(4)
    diagonal = J + noise * rng.normal(size=(len(edges), 1, 1))
    weights = jnp.asarray(diagonal * np.eye(q), jnp.float32)
    factors = [CategoricalEBMFactor([Block([nodes[i] for i in edges[:, 0]]), Block([nodes[i] for i in edges[:, 1]])],
                                    weights)]
    if field is not None:
        bias = np.broadcast_to(np.asarray(field, np.float64), (len(nodes), q)) + bias_noise * rng.normal(size=(len(nodes), q))
        factors.append(CategoricalEBMFactor([Block(nodes)], jnp.asarray(bias, jnp.float32)))
    colours = lattice.colors()
    members = [np.flatnonzero(colours == c) for c in ((1, 0) if swap_blocks else (0, 1))]
    blocks = [Block([nodes[i] for i in m]) for m in members]
    spec = BlockGibbsSpec(blocks, [])
    program = FactorSamplingProgram(spec, [CategoricalGibbsConditional(q) for _ in blocks], factors, [])
    return program, blocks, members


def _force_route(monkeypatch, backend: str) -> list:
    """Send THRML-style and batched calls of a recognised torus to the lattice kernels on `backend`;
    the returned list gets (q, L) each time the Potts route is traced or taken."""
    taken = []
    run, route = dispatch.run_potts_torus, batched._torus_route
    monkeypatch.setattr(dispatch, "torus_backend", lambda: backend)
    monkeypatch.setattr(batched, "torus_backend", lambda devices=None: backend)
    monkeypatch.setattr(dispatch, "run_potts_torus", lambda *a, **k: taken.append((a[0].q, a[0].L)) or run(*a, **k))
    monkeypatch.setattr(batched, "_torus_route",
                        lambda *a: (lambda r: r and taken.append((r[0].q, r[0].L)) or r)(route(*a)))
    return taken


def _init(blocks, chains: int, q: int):
    return [jax.random.randint(jax.random.key(10 + b), (chains, len(block)), 0, q).astype(jnp.uint8)
            for b, block in enumerate(blocks)]


def _thrml_style(program, blocks, schedule, init, keys):
    call = jax.jit(jax.vmap(lambda k, a, b: sample_states(k, program, schedule, [a, b], [], blocks)))
    return call(keys, *init)


def test_potts_torus_recognises_the_uniform_model_only():
    program, *_ = _program(6, 3, 0.7, [0.2, -0.1, 0.0])
    torus = potts_torus(program, pairwise_tables(program))
    assert torus is not None and (torus.L, torus.q) == (6, 3)
    assert torus.J == pytest.approx(0.7)
    np.testing.assert_allclose(torus.h, [0.2, -0.1, 0.0], rtol=1e-6)
    assert torus_model(program, pairwise_tables(program)) is not None
    swapped, *_ = _program(8, 4, 1.0, swap_blocks=True)  # the other colour first: still the torus
    assert potts_torus(swapped, pairwise_tables(swapped)).L == 8
    for other in (
        _program(6, 3, 0.7, noise=0.01)[0],  # couplings differ per edge
        _program(6, 3, 0.7, [0.2, 0.0, 0.0], bias_noise=0.01)[0],  # biases differ per node
        _program(4, 3, 0.7)[0],  # below the smallest torus the layout search places (L = 6)
    ):
        assert potts_torus(other, pairwise_tables(other)) is None


def test_routed_call_batches_chain_by_chain_and_backends_agree(monkeypatch):
    """A vmapped call gives each chain the samples it has alone with its key; the interpreted Pallas
    kernel (with per-chain seeds) takes the jax.numpy update's steps."""
    program, blocks, _ = _program(6, 3, 0.8, [0.1, 0.0, -0.2])
    init = _init(blocks, 3, 3)
    schedule = SamplingSchedule(2, 3, 2)
    keys = jax.random.split(jax.random.key(7), 3)
    runs = []
    for backend in ("jnp", "interpret"):
        with monkeypatch.context() as patch:
            taken = _force_route(patch, backend)
            runs.append(_thrml_style(program, blocks, schedule, init, keys))
            assert taken and set(taken) == {(3, 6)}
            if backend == "jnp":
                alone = sample_states(keys[1], program, schedule, [init[0][1], init[1][1]], [], blocks)
                for a, b in zip(runs[0], alone):
                    np.testing.assert_array_equal(np.asarray(a[1]), np.asarray(b))
    for a, b in zip(*runs):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert runs[0][0].dtype == jnp.uint8 and not np.array_equal(np.asarray(runs[0][0][0]), np.asarray(runs[0][0][1]))
    first, _ = _thrml_style(program, blocks, SamplingSchedule(0, 1, 1), init, keys)  # no sweep: the given states
    np.testing.assert_array_equal(np.asarray(first[:, 0]), np.asarray(init[0]))


@pytest.mark.parametrize(
    "q, J, field",
    [
        (3, 1.0, [0.0, 0.0, 0.0]),  # ferromagnetic, near the 6 × 6 torus' crossover
        (3, -0.6, [0.3, -0.2, 0.0]),  # antiferromagnetic, in a field
    ],
)
def test_routed_call_matches_the_transfer_matrix(q, J, field, monkeypatch):
    """The THRML-style call on the 6 × 6 torus: mean energy per site over 128 chains (200 warm-up
    sweeps, 100 samples 2 sweeps apart) against the exact value."""
    taken = _force_route(monkeypatch, "jnp")
    L, chains = 6, 128
    program, blocks, members = _program(L, q, J, field)
    samples = _thrml_style(program, blocks, SamplingSchedule(200, 100, 2), _init(blocks, chains, q),
                           jax.random.split(jax.random.key(3), chains))
    assert set(taken) == {(q, L)}
    states = np.zeros((chains, 100, L * L), np.int64)
    for s, m in zip(samples, members):
        states[:, :, m] = np.asarray(s)
    states = states.reshape(chains, 100, L, L)
    bonds = (states == np.roll(states, -1, axis=2)).sum((2, 3)) + (states == np.roll(states, -1, axis=3)).sum((2, 3))
    energy = -(J * bonds + np.asarray(field)[states].sum((2, 3))) / (L * L)
    per_chain = energy.mean(1)
    se = per_chain.std(ddof=1) / np.sqrt(chains)
    exact = potts_energy_per_site_exact(q, L, 1.0, J, field)
    z = (per_chain.mean() - exact) / se
    assert se < 0.01
    assert abs(z) < Z_LIMIT, f"q={q}, J={J}: {per_chain.mean():.5f} ± {se:.5f}, exact {exact:.5f} (z = {z:.2f})"


def test_batched_call_takes_the_route_and_follows_the_thrml_style_chains(monkeypatch):
    """`sample_states_batched` runs the Potts kernel, and with the THRML-style call's chain words it
    gives that call's samples; J and h are arguments of its compiled run."""
    taken = _force_route(monkeypatch, "jnp")
    program, blocks, _ = _program(6, 3, 0.8, [0.1, 0.0, -0.2])
    init = _init(blocks, 4, 3)
    schedule = SamplingSchedule(2, 3, 2)
    keys = jax.random.split(jax.random.key(5), 4)
    monkeypatch.setattr(batched, "chain_words_from_key", lambda key, chains: jax.vmap(dispatch.key_words_of)(keys))
    routed = batched.sample_states_batched(jax.random.key(0), program, schedule, init, [], blocks)
    assert taken == [(3, 6)]
    for a, b in zip(routed, _thrml_style(program, blocks, schedule, init, keys)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    traced = []
    from heatbath.kernels import potts_torus as module

    run_local = module._run_local
    monkeypatch.setattr(module, "_run_local", lambda *a, **k: traced.append(1) or run_local(*a, **k))
    for J in (0.5, 0.6, 0.7):
        other, other_blocks, _ = _program(6, 3, J, [0.1, 0.0, -0.2])
        batched.sample_states_batched(jax.random.key(0), other, SamplingSchedule(1, 2, 1), init, [], other_blocks)
    assert len(traced) == 1  # new weights, same compiled run


def test_eager_calls_compile_the_route_once_for_any_weights(monkeypatch):
    """An eager call (one chain, no jit) of a Potts torus runs one compiled call per structure: other
    weights (J and the field) trace nothing new, and each call gives the samples of `jax.jit`."""
    monkeypatch.setattr(dispatch, "_TORUS_CALLS", {})
    taken = _force_route(monkeypatch, "jnp")
    program, blocks, _ = _program(6, 3, 0.8, [0.1, 0.0, -0.2])
    init = [x[0] for x in _init(blocks, 1, 3)]
    schedule = SamplingSchedule(2, 3, 2)
    other = jax.tree.map(lambda w: -1.5 * w if isinstance(w, jax.Array) and w.dtype == jnp.float32 else w, program)
    runs = [sample_states(jax.random.key(3), p, schedule, init, [], blocks) for p in (program, other)]
    assert taken == [(3, 6)] and len(dispatch._TORUS_CALLS) == 1
    for p, run in zip((program, other), runs):
        jitted = jax.jit(lambda k: sample_states(k, p, schedule, init, [], blocks))(jax.random.key(3))
        for a, b in zip(run, jitted):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(runs[0][0]), np.asarray(runs[1][0]))  # the weights matter


@pytest.mark.skipif(not pallas_available(), reason="the native kernel runs on a CUDA GPU")
def test_native_route_is_the_default_on_gpus_and_takes_the_jax_numpy_steps(monkeypatch):
    program, blocks, _ = _program(32, 5, 1.0)
    init = _init(blocks, 300, 5)
    keys = jax.random.split(jax.random.key(1), 300)
    schedule = SamplingSchedule(5, 3, 2)
    assert torus_model(program, pairwise_tables(program)) is not None and dispatch.torus_backend() == "pallas"
    runs = []
    for backend in ("pallas", "jnp"):
        with monkeypatch.context() as patch:
            taken = _force_route(patch, backend)
            runs.append(_thrml_style(program, blocks, schedule, init, keys))
            assert set(taken) == {(5, 32)}
    for a, b in zip(*runs):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
